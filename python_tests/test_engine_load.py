"""What routers and vLLM's data-parallel balancer read of a LAMPS engine's load, in-process.

vLLM's DP balancer scores engines from the scheduler's `get_request_counts()` and
`get_kv_cache_usage()` (`EngineCore._maybe_publish_request_counts`, `vllm/v1/engine/core.py`),
and `/metrics` readers from the `SchedulerStats` of `make_stats()` (`vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`). Here vLLM's real scheduler runs with
LAMPS on CPU (the harness samples the tokens; no model runs) while LAMPS moves paused sessions
between its queues, parks them, releases or keeps their KV and pins finished turns, and these
numbers must still count every live request once and every held block once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from lamps._core import Strategy
from lamps.harness import build_scheduler, build_vllm_config, make_request, run_step
from lamps.mechanism.stats_channel import take_stats_payload
from lamps.vllm import LampsScheduler, LampsSyncScheduler
from lamps.vllm.counters import LampsStats
from lamps.vllm.prometheus import stats_payload

BLOCK = 16
# Recompute expensive (a large model): keeping KV through a short gap is the least waste.
EXPENSIVE_RECOMPUTE = {"a_ms_per_token": 5.0, "c_ms": 20.0, "kv_bytes_per_token": 1e6,
                       "link_bytes_per_second": 1e9}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def build(model: Path, cls: type = LampsSyncScheduler, **vllm: Any) -> Any:
    """A scheduler that builds the SchedulerStats a server publishes, on a settable clock."""
    lamps = {"log_interval_s": 0.0, "allow_swap": False, "cost_model": EXPENSIVE_RECOMPUTE}
    kwargs: dict[str, Any] = {"num_blocks": 64, "max_num_seqs": 8, **vllm}
    if cls is not Scheduler:
        kwargs["additional_config"] = {"lamps": lamps}
    sched: Any = build_scheduler(build_vllm_config(model, **kwargs), scheduler_cls=cls,
                                 log_stats=True)  # fmt: skip
    clock = Clock()
    if hasattr(sched, "set_clock"):
        sched.set_clock(clock)
    return sched, clock


def add(sched: Any, rid: str, prompt: Any, max_tokens: int = 4, sid: str | None = None,
        resumable: bool = False, **hints: Any) -> None:  # fmt: skip
    """Add a request with LAMPS hints (`tool`, `predicted_api_seconds`, `session_end`)."""
    xargs = {f"lamps_{k}": v for k, v in hints.items()} or None
    sched.add_request(make_request(rid, prompt, max_tokens=max_tokens, session_id=sid,
                                   resumable=resumable, extra_args=xargs))  # fmt: skip


def steps_until(sched: Any, done: Any, limit: int = 80) -> None:
    for _ in range(limit):
        if done():
            return
        run_step(sched)
    raise AssertionError("the scheduler never got there")


def live(sched: Any) -> list[Any]:
    return [r for r in sched.requests.values() if not r.is_finished()]


def check_counts(sched: Any) -> dict[str, int]:
    """The counts vLLM's balancer and /metrics read, against the requests the engine holds."""
    running, waiting = sched.get_request_counts()
    requests = live(sched)
    paused = sum(r.status == RequestStatus.WAITING_FOR_STREAMING_REQ for r in requests)
    assert running == len(sched.running)
    assert running + waiting == len(requests)  # each live request once, whatever queue
    assert paused == sched.num_waiting_for_streaming_input
    assert sched.get_num_unfinished_requests() == len(requests) - paused
    stats = sched.make_stats()
    assert stats.num_running_reqs == running
    assert stats.num_waiting_reqs + stats.num_skipped_waiting_reqs == waiting
    assert stats.kv_cache_usage == sched.get_kv_cache_usage()
    payload = take_stats_payload(stats)
    assert payload is not None
    assert payload["paused_requests"] == paused
    assert payload["queued_requests"] == waiting - paused
    return payload


def held_blocks(sched: Any) -> int:
    """Blocks some request or pin holds (not free, not evictable)."""
    pool = sched.kv_cache_manager.block_pool
    return pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()


def usage_blocks(sched: Any) -> float:
    return sched.get_kv_cache_usage() * (sched.kv_cache_manager.block_pool.num_gpu_blocks - 1)


@pytest.mark.parametrize("cls", [LampsSyncScheduler, LampsScheduler])
def test_counts_cover_every_live_request_once(tiny_llama_dir: Path, cls: type) -> None:
    sched, clock = build(tiny_llama_dir, cls, max_num_seqs=3)
    # Two streaming sessions: "d"'s long call discards its KV (it moves to `waiting`), "k"'s
    # short one keeps it (it stays in `kv_holding_waiting`); both are parked aside meanwhile.
    add(sched, "d", range(100), 4, resumable=True, tool="t", predicted_api_seconds=1e5)
    add(sched, "k", range(200, 300), 4, resumable=True, tool="t", predicted_api_seconds=0.0)
    # An HTTP session turn (pinned when it finishes) and plain requests beyond max_num_seqs.
    add(sched, "h", range(400, 520), 3, sid="h", tool="t", predicted_api_seconds=0.0)
    for i in range(4):
        start = 1000 * (i + 1)
        add(sched, f"r{i}", range(start, start + 30 * i + 20), 6 + i)
    seen_waiting = seen_paused = 0
    for _ in range(60):
        payload = check_counts(sched)
        seen_waiting = max(seen_waiting, payload["queued_requests"])
        seen_paused = max(seen_paused, payload["paused_requests"])
        if {r.request_id for r in live(sched)} == {"d", "k"}:
            break
        run_step(sched)
    assert seen_waiting >= 1 and seen_paused == 2
    assert sched.lamps_state("d").strategy == Strategy.DISCARD
    assert sched.lamps_state("k").strategy == Strategy.PRESERVE
    assert sched.get_request_counts() == (0, 2)  # vLLM counts a paused session as waiting
    assert sched.lamps_sessions.pinned_blocks > 0  # "h" is parked: no request, pinned blocks
    clock.now += 1.0
    for rid in ("d", "k"):  # the next inputs arrive: both are queued and run again
        add(sched, rid, [5, 6, 7], 2, resumable=True)
        check_counts(sched)
    for _ in range(20):
        run_step(sched)
        check_counts(sched)
    for rid in ("d", "k"):  # the resumed turns ran to their end and paused again
        request = sched.requests[rid]
        assert request.num_output_tokens == 2
        assert request.status == RequestStatus.WAITING_FOR_STREAMING_REQ


def test_kv_usage_counts_pinned_and_kept_kv_only(tiny_llama_dir: Path) -> None:
    sched, _ = build(tiny_llama_dir)
    vllm, _ = build(tiny_llama_dir, Scheduler)
    prompt = list(range(1, 200))
    for s in (sched, vllm):  # one HTTP session turn whose next request is expected at once
        add(s, "t1", prompt, 4, sid="s", tool="t", predicted_api_seconds=0.0)
        steps_until(s, lambda s=s: "t1" not in s.requests)
    pinned = sched.kv_pauses.num_pinned_blocks
    assert pinned == (len(prompt) + 3) // BLOCK  # its full computed blocks
    # A parked turn is no request; its pinned blocks are used KV, exactly.
    assert sched.get_request_counts() == vllm.get_request_counts() == (0, 0)
    assert usage_blocks(sched) == pytest.approx(pinned) and held_blocks(sched) == pinned
    assert usage_blocks(vllm) == 0  # without LAMPS the same blocks are evictable cache
    payload = check_counts(sched)
    assert payload["pinned_blocks"] == payload["parked_blocks"] == pinned
    assert payload["parked_kv_preserve"] == pinned * BLOCK
    assert payload["parked_kv_discard"] == payload["parked_kv_swap"] == 0
    # The session's last turn ends it: the pin goes, the usage with it.
    add(sched, "t2", [*prompt, 7, 7, 7, 7, 9], 2, sid="s", session_end=1)
    steps_until(sched, lambda: "t2" not in sched.requests)
    assert usage_blocks(sched) == 0 and check_counts(sched)["pinned_blocks"] == 0
    # A turn with a long gap on a quiet engine is left to the prefix cache: not used KV.
    add(sched, "u1", range(600, 700), 4, sid="u", tool="t", predicted_api_seconds=1e4)
    steps_until(sched, lambda: "u1" not in sched.requests)
    parked = sched.lamps_sessions.session("u").parked
    assert parked.strategy == Strategy.DISCARD and usage_blocks(sched) == 0
    payload = check_counts(sched)
    assert payload["parked_kv_discard"] == parked.tokens > 0
    assert payload["parked_kv_preserve"] == payload["pinned_blocks"] == 0
    # A paused streaming session's kept KV is used; once released it is not.
    add(sched, "p", range(800, 900), 4, resumable=True, tool="t", predicted_api_seconds=0.0)
    steps_until(sched, lambda: sched.num_waiting_for_streaming_input == 1)
    held = len(sched.kv_cache_manager.get_blocks("p").blocks[0])
    assert usage_blocks(sched) == pytest.approx(held) and held > 0
    assert sched.get_request_counts() == (0, 1)


def test_memory_over_time_sums_what_the_engine_holds(tiny_llama_dir: Path) -> None:
    sched, clock = build(tiny_llama_dir)
    assert check_counts(sched)["memory_over_time"] == 0
    add(sched, "t1", range(1, 200), 4, sid="s", tool="t", predicted_api_seconds=0.0)
    steps_until(sched, lambda: "t1" not in sched.requests)
    add(sched, "p", range(800, 900), 4, resumable=True, tool="t", predicted_api_seconds=0.0)
    steps_until(sched, lambda: sched.num_waiting_for_streaming_input == 1)
    pinned_tokens = sched.kv_pauses.num_pinned_blocks * BLOCK
    paused_tokens = sched.requests["p"].num_computed_tokens
    assert pinned_tokens > 0 and paused_tokens > 0
    # Both were expected back at once and are 3 s late: each is expected about as late again
    # (as LAMPS' re-decisions expect), holding its KV meanwhile.
    clock.now += 3.0
    expected = 3.0 * (pinned_tokens + paused_tokens)
    assert check_counts(sched)["memory_over_time"] == round(expected)
    # A queued request adds its LAMPS score; a larger one (same turn) adds more.
    before = sched.lamps_memory_over_time()
    add(sched, "small", range(2000, 2040), 8)
    small = sched.lamps_memory_over_time() - before
    add(sched, "large", range(3000, 3400), 8)
    large = sched.lamps_memory_over_time() - before - small
    assert 0 < small < large
    run_step(sched)  # both run now: counted from their live progress instead
    assert {r.request_id for r in sched.running} == {"small", "large"}
    assert sched.lamps_memory_over_time() > before
    # Everything finished, the session ended, the paused stream closed: nothing is held.
    steps_until(sched, lambda: not sched.running)
    add(sched, "t2", [*range(1, 200), 7, 7, 7, 7, 9], 1, sid="s", session_end=1)
    sched.finish_requests("p", RequestStatus.FINISHED_ABORTED)
    steps_until(sched, lambda: not sched.requests)
    payload = check_counts(sched)
    assert payload["memory_over_time"] == payload["pinned_blocks"] == 0


def test_huge_values_travel_clamped() -> None:
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from lamps.mechanism.stats_channel import attach_stats_payload

    stats = LampsStats(memory_over_time=10**30, ranking_seconds=1e30, pinned_blocks=3)
    sched_stats = SchedulerStats()
    attach_stats_payload(sched_stats, stats_payload(stats))
    bufs = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=sched_stats))
    decoded = MsgpackDecoder(EngineCoreOutputs).decode(bufs).scheduler_stats
    payload = take_stats_payload(decoded)
    assert payload is not None
    assert payload["memory_over_time"] == payload["ranking_seconds"] == (1 << 63) - 1
    assert payload["pinned_blocks"] == 3
