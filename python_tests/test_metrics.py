"""LAMPS' counters on vLLM's /metrics: carried in SchedulerStats, published by a stat logger."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from vllm.v1.metrics.stats import KV_FETCH_STAGES, SchedulerStats

from lamps.harness import build_scheduler, build_vllm_config, make_request, run_step
from lamps.mechanism.stats_channel import attach_stats_payload, take_stats_payload
from lamps.vllm import LampsSyncScheduler
from lamps.vllm.counters import COUNTER, LampsStats
from lamps.vllm.prometheus import LampsStatLogger, stats_payload


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model_name": "m", "engine": "0", **labels})


class _Config:
    class model_config:
        served_model_name = "m"


def test_payload_survives_the_engine_core_process_boundary() -> None:
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    stats = LampsStats(pauses=3, ranking_seconds=0.25, parked_blocks=7)
    sched_stats = SchedulerStats(num_kv_fetch_reqs_by_stage={KV_FETCH_STAGES[0]: 2})
    attach_stats_payload(sched_stats, stats_payload(stats))
    bufs = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=sched_stats))
    decoded = MsgpackDecoder(EngineCoreOutputs).decode(bufs).scheduler_stats
    payload = take_stats_payload(decoded)
    assert payload is not None
    assert payload["pauses"] == 3 and payload["parked_blocks"] == 7
    assert payload["ranking_seconds"] == 250_000  # microseconds
    # vLLM's own entries are left as they were, and ours are gone.
    assert decoded.num_kv_fetch_reqs_by_stage == {KV_FETCH_STAGES[0]: 2}
    assert take_stats_payload(decoded) is None


def test_stat_logger_publishes_every_field_from_its_metadata() -> None:
    logger = LampsStatLogger(_Config(), [0])
    stats = LampsStats(pauses=2, preserved=1, discarded=1, session_preserved=4, takeovers=3,
                       recovered_tokens=96, parked_blocks=5, parked_preserve=2,
                       ranking_seconds=0.5, hint_warnings=1)  # fmt: skip
    for _ in range(2):  # the same cumulative totals twice: counted once
        sched_stats = SchedulerStats()
        attach_stats_payload(sched_stats, stats_payload(stats))
        logger.record(sched_stats, None)
        assert sched_stats.num_kv_fetch_reqs_by_stage == {}  # taken out for vLLM's loggers
    assert sample("lamps_pauses_total") == 2
    assert sample("lamps_pause_decisions_total", strategy="preserve") == 1
    assert sample("lamps_pause_decisions_total", strategy="discard") == 1
    assert sample("lamps_session_parks_total", strategy="preserve") == 4
    assert sample("lamps_takeovers_total") == 3
    assert sample("lamps_recovered_tokens_total") == 96
    assert sample("lamps_hint_warnings_total") == 1
    assert sample("lamps_ranking_seconds_total") == 0.5
    assert sample("lamps_parked_blocks") == 5
    assert sample("lamps_parked_sessions", strategy="preserve") == 2
    stats.takeovers, stats.parked_blocks = 5, 1
    sched_stats = SchedulerStats()
    attach_stats_payload(sched_stats, stats_payload(stats))
    logger.record(sched_stats, None)
    assert sample("lamps_takeovers_total") == 5
    assert sample("lamps_parked_blocks") == 1
    text = generate_latest(REGISTRY).decode()
    for f in fields(LampsStats):
        meta = f.metadata
        name = meta["series"] + ("_total" if meta["kind"] == COUNTER else "")
        assert f"\n{name}{{" in text, name


def test_stats_without_payload_are_left_alone() -> None:
    logger = LampsStatLogger(_Config(), [0])
    sched_stats = SchedulerStats(num_kv_fetch_reqs_by_stage={KV_FETCH_STAGES[1]: 1})
    logger.record(sched_stats, None)
    logger.record(None, None)
    assert sched_stats.num_kv_fetch_reqs_by_stage == {KV_FETCH_STAGES[1]: 1}


def test_scheduler_stats_carry_the_lamps_counters(tiny_llama_dir: Path) -> None:
    config = build_vllm_config(tiny_llama_dir, additional_config={"lamps": {"log_interval_s": 0}})
    sched: Any = build_scheduler(config, scheduler_cls=LampsSyncScheduler, log_stats=True)
    sched.add_request(make_request("r", list(range(40)), max_tokens=2, session_id="s",
                                   extra_args={"lamps_tool": "t", "lamps_bogus": 1}))  # fmt: skip
    for _ in range(4):
        run_step(sched)
    payload = take_stats_payload(sched.make_stats())
    assert payload is not None
    assert payload["hinted_requests"] == 1 and payload["hint_warnings"] == 1
    assert payload["session_turns"] == 1 and payload["sessions"] == 1
