"""vLLM 0.34's admission changes against the plug-in's schedulers, on vLLM's real scheduler.

- Cache-aware admission (`--cache-aware-admission-window`) reorders the head of `waiting` by
  position; the plug-in's schedulers order it themselves and turn it off (`compat`).
- `--max-num-inflight-kv-loads` caps the async KV loads that hold blocks before they run (the
  LAMPS swap connector's swap-ins are such loads) and caches each parked load's reservation;
  an aborted load counts against the cap until the workers report it.

Each test skips before vLLM 0.34, which has neither option.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import test_swap_connector
from test_swap_connector import SwapHarness, paused, start_session
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from lamps.baselines.continuum import ContinuumScheduler
from lamps.baselines.infercept import InferCeptScheduler
from lamps.baselines.lamps_authors import LampsAuthorsScheduler
from lamps.harness import build_scheduler, build_vllm_config, make_request, run_step
from lamps.mechanism.compat import VLLM_VERSION
from lamps.vllm import LampsScheduler, LampsSyncScheduler

pytestmark = pytest.mark.skipif(
    VLLM_VERSION[:2] < (0, 34),
    reason="cache-aware admission and --max-num-inflight-kv-loads are new in vLLM 0.34",
)

QUIET = {"log_interval_s": 0.0}
PLUGIN_SCHEDULERS = [
    LampsSyncScheduler,
    LampsScheduler,
    InferCeptScheduler,
    ContinuumScheduler,
    LampsAuthorsScheduler,
]


def with_cache_aware_window(
    model_dir: Path, scheduler_cls: type, window: int, **kwargs: Any
) -> Any:
    """A scheduler built with cache-aware admission asked for on every step (threshold 0)."""
    config = build_vllm_config(model_dir, enable_prefix_caching=True, **kwargs)
    config.scheduler_config.cache_aware_admission_window = window
    config.scheduler_config.cache_aware_admission_threshold = 0.0
    return build_scheduler(config, scheduler_cls=scheduler_cls)


# ----- cache-aware admission -------------------------------------------------------------------


@pytest.mark.parametrize("cls", PLUGIN_SCHEDULERS, ids=lambda c: c.__name__)
def test_cache_aware_window_is_turned_off_with_a_warning(
    tiny_llama_dir: Path, cls: type, caplog: pytest.LogCaptureFixture
) -> None:
    vllm_logger = logging.getLogger("vllm")
    propagate, vllm_logger.propagate = vllm_logger.propagate, True
    try:
        with caplog.at_level(logging.WARNING, logger="vllm.lamps"):
            sched = with_cache_aware_window(
                tiny_llama_dir, cls, 8, additional_config={"lamps": QUIET}
            )
    finally:
        vllm_logger.propagate = propagate
    assert sched.cache_aware_window == 0
    assert f"{cls.__name__} orders its waiting queue" in caplog.text
    assert "--cache-aware-admission-window=8" in caplog.text


def test_vllm_keeps_its_cache_aware_window(tiny_llama_dir: Path) -> None:
    # The control: vLLM's own FCFS scheduler uses the window it was given.
    assert with_cache_aware_window(tiny_llama_dir, Scheduler, 8).cache_aware_window == 8


@pytest.mark.parametrize(
    "cls", [LampsAuthorsScheduler, ContinuumScheduler], ids=lambda c: c.__name__
)
def test_a_re_sorted_queue_keeps_its_order_though_cache_aware_admission_was_asked_for(
    tiny_llama_dir: Path, cls: type
) -> None:
    """These baselines sort their deque before each step ("small" first: the smaller score, the
    earlier program); vLLM's reorder would then move "big", whose prefix is cached, ahead."""
    sched = with_cache_aware_window(tiny_llama_dir, cls, 8, max_num_seqs=1)
    sched.add_request(make_request("warm", list(range(400)), max_tokens=1))
    for _ in range(3):
        run_step(sched)
    sched.add_request(make_request("small", list(range(3000, 3010)), max_tokens=2))
    sched.add_request(make_request("big", [*range(400), 7, 8], max_tokens=4))
    order: list[str] = []
    for _ in range(20):
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
    assert order == ["small", "big"]


def test_starved_request_is_promoted_though_cache_aware_admission_was_asked_for(
    tiny_llama_dir: Path,
) -> None:
    """vLLM's reorder takes the window's requests out of LAMPS' ranked queue and puts them back
    every step the cached prefixes disagree with the ranking: each wait restarted, no promotion,
    and a request that a stream of smaller ones outranks never ran."""
    sched = with_cache_aware_window(
        tiny_llama_dir,
        LampsSyncScheduler,
        8,
        max_num_seqs=1,
        additional_config={
            "lamps": {**QUIET, "starvation_rule": "iterations", "starvation_threshold": 5}
        },
    )
    sched.add_request(make_request("warm", list(range(400)), max_tokens=1))
    for _ in range(3):
        run_step(sched)
    assert "warm" not in sched.requests
    # "big" has the deepest cached prefix: the reorder would move it to the window's front.
    sched.add_request(make_request("big", [*range(400), 7, 8], max_tokens=4))
    assert sched.kv_cache_manager.get_num_cached_tokens(sched.requests["big"]) == 400
    order: list[str] = []
    for i in range(30):
        prompt = list(range(3000 + 20 * i, 3010 + 20 * i))
        sched.add_request(make_request(f"s{i}", prompt, max_tokens=1))
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
    assert "big" in order
    assert 1 <= order.index("big") <= 7
    assert sched.lamps_stats.promotions >= 1


# ----- the LAMPS swap connector's swap-ins under --max-num-inflight-kv-loads ------------------


@pytest.fixture
def capped_harness(tiny_llama_dir: Path) -> Iterator[Any]:
    """SwapHarness factory whose scheduler caps in-flight async KV loads at `cap`."""
    made: list[SwapHarness] = []
    real_build = test_swap_connector.build_vllm_config

    def make(cap: int, **kwargs: Any) -> SwapHarness:
        def build(*args: Any, **config_kwargs: Any) -> Any:
            config = real_build(*args, **config_kwargs)
            config.scheduler_config.max_num_inflight_kv_loads = cap
            return config

        with mock.patch.object(test_swap_connector, "build_vllm_config", build):
            made.append(SwapHarness(tiny_llama_dir, **kwargs))
        assert made[-1].scheduler.scheduler_config.max_num_inflight_kv_loads == cap
        return made[-1]

    yield make
    for h in made:
        h.worker.shutdown()


def loads_in_flight(h: SwapHarness) -> int:
    """Requests holding blocks for a swap-in that has not been admitted yet."""
    waiting_for_kv = RequestStatus.WAITING_FOR_REMOTE_KVS
    return sum(1 for r in h.scheduler.requests.values() if r.status == waiting_for_kv)


def assert_no_load_state_left(h: SwapHarness) -> None:
    """vLLM's load accounting is back to zero: counts, cached reservations, aborted loads."""
    sched = h.scheduler
    assert not any(sched._kv_fetch_counts.values()), sched._kv_fetch_counts
    assert sched._parked_reservations == {}
    assert sched._parked_reserved_blocks == 0
    assert sched._aborted_kv_loads == set()
    assert len(sched.async_kv_waiting) == 0


def swap_out_sessions(h: SwapHarness, ids: list[str]) -> None:
    for i, rid in enumerate(ids):
        start_session(h, rid, prompt_len=40 + 8 * i)
    h.step_until(lambda: all(paused(h, r) and h.connector.swap_state(r) == "saved" for r in ids))


def test_swap_ins_keep_to_the_cap_and_every_session_finishes(capped_harness: Any) -> None:
    h = capped_harness(cap=1, num_blocks=128, host_pool_blocks_wanted=128)
    ids = ["a", "b", "c"]
    swap_out_sessions(h, ids)
    for rid in ids:
        h.resume(rid, [21, 22])
    most = 0
    for _ in range(200):
        if all(paused(h, rid) for rid in ids):
            break
        h.step()
        most = max(most, loads_in_flight(h))
        # The connector does not claim loads as `may_load_async`: they stay in LAMPS' ranking.
        assert len(h.scheduler.async_kv_waiting) == 0
    assert all(paused(h, rid) for rid in ids)
    assert most == 1
    assert h.connector.swap_stats()["swap_ins"] == 3
    assert h.scheduler.lamps_stats.recomputed_tokens == 0  # every context came back from host
    assert_no_load_state_left(h)
    for rid in ids:
        h.scheduler.finish_requests(rid, RequestStatus.FINISHED_ABORTED)
    h.step_until(lambda: not h.connector.scheduler_side.records)
    h.step_until(h.host_pool_drained)


def test_an_aborted_swap_in_frees_its_place_under_the_cap(capped_harness: Any) -> None:
    h = capped_harness(cap=1)
    swap_out_sessions(h, ["a", "b"])
    h.engine.set_paused(True)  # hold the copier: "a"'s load stays in flight
    h.resume("a", [1, 2])
    h.step_until(lambda: h.status("a") == RequestStatus.WAITING_FOR_REMOTE_KVS)
    h.resume("b", [3, 4])
    h.scheduler.finish_requests("a", RequestStatus.FINISHED_ABORTED)
    for _ in range(3):
        h.step()
    # Until the workers report the stopped load its blocks are in use: it still counts.
    assert h.scheduler._aborted_kv_loads == {"a"}
    assert h.status("b") == RequestStatus.WAITING
    h.engine.set_paused(False)
    h.step_until(lambda: "a" not in h.scheduler.requests)
    h.step_until(lambda: paused(h, "b"))
    assert h.connector.swap_stats()["loaded_in"] >= 1
    assert_no_load_state_left(h)
