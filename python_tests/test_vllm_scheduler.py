"""LampsScheduler driven in-process through vLLM's real Scheduler classes on CPU."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from plugin_helpers import (
    LAMPS_CLASSES,
    QUIET,
    free_blocks,
    lamps,
    resume,
    start_session,
)
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from lamps._core import Strategy
from lamps.harness import SettableClock, make_request, run_step
from lamps.vllm import LampsScheduler, LampsSyncScheduler


def admitted_order(sched: Any, steps: int = 100) -> list[str]:
    order: list[str] = []
    for _ in range(steps):
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs if r.req_id not in order]
    return order


def add_three(sched: Any) -> None:
    # Arrival order is the reverse of size order: FCFS and LAMPS must disagree.
    sched.add_request(make_request("big", list(range(300)), max_tokens=40))
    sched.add_request(make_request("mid", list(range(1000, 1100)), max_tokens=20))
    sched.add_request(make_request("small", list(range(2000, 2010)), max_tokens=4))


@pytest.mark.parametrize("cls", LAMPS_CLASSES)
def test_waiting_queue_runs_smallest_score_first(make_vllm_scheduler: Any, cls: type) -> None:
    sched = lamps(make_vllm_scheduler, cls, max_num_seqs=1)
    add_three(sched)
    assert admitted_order(sched) == ["small", "mid", "big"]


def test_vllm_fcfs_baseline_disagrees(make_vllm_scheduler: Any) -> None:
    sched = make_vllm_scheduler(Scheduler, max_num_seqs=1)
    add_three(sched)
    assert admitted_order(sched) == ["big", "mid", "small"]


def test_ranking_off_is_fcfs(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, max_num_seqs=1, ranking=False)
    add_three(sched)
    assert admitted_order(sched) == ["big", "mid", "small"]


@pytest.mark.parametrize("cls", [LampsSyncScheduler, Scheduler])
def test_preemption_victim_is_largest_score(make_vllm_scheduler: Any, cls: type) -> None:
    # 12 usable blocks of 16 tokens: three growing requests run out and one is preempted.
    kw: dict[str, Any] = {"num_blocks": 13, "max_num_seqs": 8}
    if cls is LampsSyncScheduler:
        kw["additional_config"] = {"lamps": QUIET}
    sched = make_vllm_scheduler(cls, **kw)
    sched.add_request(make_request("long", list(range(90)), max_tokens=200))
    run_step(sched)  # admitted first, so it is running[0] for vLLM's FCFS
    sched.add_request(make_request("a", list(range(500, 530)), max_tokens=200))
    sched.add_request(make_request("b", list(range(700, 740)), max_tokens=200))
    victims: list[str] = []
    for _ in range(60):
        out, _ = run_step(sched)
        victims += sorted(out.preempted_req_ids or ())
        if victims:
            break
    assert victims, "the cache never filled up"
    expected = "long" if cls is LampsSyncScheduler else "b"
    assert victims[0] == expected
    assert sched.requests[expected].status == RequestStatus.PREEMPTED


def test_starved_request_is_promoted(make_vllm_scheduler: Any) -> None:
    sched = lamps(
        make_vllm_scheduler, max_num_seqs=1, starvation_rule="iterations", starvation_threshold=5
    )
    sched.add_request(make_request("big", list(range(400)), max_tokens=4))
    order: list[str] = []
    for i in range(30):
        # A stream of small requests would outrank "big" forever without promotion.
        sched.add_request(
            make_request(f"s{i}", list(range(3000 + 20 * i, 3010 + 20 * i)), max_tokens=1)
        )
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
    assert "big" in order
    assert 1 <= order.index("big") <= 7
    assert sched.lamps_stats.promotions >= 1


def test_default_rule_bounds_the_wait_and_keeps_ranking_for_most_admissions(
    make_vllm_scheduler: Any,
) -> None:
    # The default: a request waiting starvation_seconds (10 s) is promoted, and promoted
    # requests get one admission in starvation_share (4); the other three stay in score order.
    sched = lamps(make_vllm_scheduler, max_num_seqs=1)
    clock = SettableClock()
    sched.set_clock(clock)
    for name in ("big1", "big2"):
        sched.add_request(make_request(name, list(range(400 + len(name))), max_tokens=1))
    order: list[str] = []
    for i in range(40):
        sched.add_request(
            make_request(f"s{i}", list(range(3000 + 20 * i, 3010 + 20 * i)), max_tokens=1)
        )
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
        clock.now += 1.0
    first = order.index("big1")
    assert 10 <= first <= 12, order  # waited its 10 s, then went within one share
    gap = order.index("big2") - first
    assert gap == 4, order  # three ranked admissions between two promoted ones
    assert sched.lamps_stats.promotions >= 2


def test_no_promotion_when_starvation_off(make_vllm_scheduler: Any) -> None:
    sched = lamps(
        make_vllm_scheduler, max_num_seqs=1, starvation_rule="iterations", starvation_threshold=0
    )
    sched.add_request(make_request("big", list(range(400)), max_tokens=4))
    order: list[str] = []
    for i in range(20):
        sched.add_request(
            make_request(f"s{i}", list(range(3000 + 20 * i, 3010 + 20 * i)), max_tokens=1)
        )
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
    assert "big" not in order
    assert sched.lamps_stats.promotions == 0


# ----- API pauses ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAMPS_CLASSES)
def test_preserve_holds_blocks_and_resumes_without_recompute(
    make_vllm_scheduler: Any, cls: type
) -> None:
    sched = lamps(make_vllm_scheduler, cls)
    total = free_blocks(sched)
    req = start_session(sched, api_seconds=0.0)
    frontier = req.num_computed_tokens
    assert sched.lamps_state("s").strategy == Strategy.PRESERVE
    assert free_blocks(sched) == total - (frontier + 15) // 16
    resume(sched)
    out, _ = run_step(sched)
    # Only the API's three tokens are prefilled: the context was kept.
    assert out.num_scheduled_tokens == {"s": 3}
    assert sched.lamps_stats.preserved == 1
    assert sched.lamps_stats.recomputed_tokens == 0


@pytest.mark.parametrize("cls", LAMPS_CLASSES)
def test_discard_frees_blocks_and_prefix_cache_limits_recompute(
    make_vllm_scheduler: Any, cls: type
) -> None:
    sched = lamps(make_vllm_scheduler, cls, allow_swap=False)
    total = free_blocks(sched)
    req = start_session(sched, api_seconds=1e5)
    frontier = sched.lamps_state("s").frontier
    assert frontier == 100 + 4 - 1  # the last sampled token was never computed
    assert sched.lamps_state("s").strategy == Strategy.DISCARD
    assert free_blocks(sched) == total
    assert req.num_computed_tokens == 0
    resume(sched)
    out, _ = run_step(sched)
    cached = frontier // 16 * 16
    assert out.num_scheduled_tokens == {"s": frontier - cached + 3}
    assert sched.lamps_stats.discarded == 1
    assert sched.lamps_stats.prefix_hit_tokens == cached
    assert sched.lamps_stats.recomputed_tokens == frontier - cached
    for _ in range(4):
        run_step(sched)
    assert req.num_output_tokens == 2  # the resumed turn produced all its tokens


def test_discard_after_eviction_recomputes_everything(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, allow_swap=False, num_blocks=20)
    start_session(sched, api_seconds=1e5, prompt_len=64)
    frontier = sched.lamps_state("s").frontier
    # Another request takes the whole cache while the call runs: the freed blocks get evicted.
    sched.add_request(make_request("hog", list(range(5000, 5000 + 19 * 16 - 2)), max_tokens=1))
    for _ in range(3):
        run_step(sched)
    resume(sched)
    out, _ = run_step(sched)
    assert out.num_scheduled_tokens["s"] == frontier + 3
    assert sched.lamps_stats.recomputed_tokens == frontier


def test_swap_without_offloading_falls_back_to_discard_once(
    make_vllm_scheduler: Any, caplog: Any
) -> None:
    sched = lamps(make_vllm_scheduler, allow_swap=True)
    start_session(sched, api_seconds=1e6, rid="s1")
    start_session(sched, api_seconds=1e6, rid="s2")
    assert sched.lamps_stats.swap_fallbacks == 2
    assert sched.lamps_stats.discarded == 2
    assert sched.lamps_state("s1").strategy == Strategy.DISCARD
    warnings = [r for r in caplog.records if "Swap" in r.getMessage()]
    assert len(warnings) == 1
    assert "s1" in warnings[0].getMessage()


def test_preserved_pause_outlasting_prediction_is_redecided(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, allow_swap=False)
    clock = SettableClock(1000.0)
    sched.set_clock(clock)
    total = free_blocks(sched)
    start_session(sched, api_seconds=0.0)
    assert sched.lamps_state("s").strategy == Strategy.PRESERVE
    clock.now += 10.0
    run_step(sched)  # still short: waiting 10 s more costs less than recomputing
    clock.now += 1e6
    run_step(sched)
    assert sched.lamps_stats.redecided == 1
    assert sched.lamps_state("s").strategy == Strategy.DISCARD
    assert free_blocks(sched) == total
    clock.now += 1.0
    resume(sched)
    for _ in range(4):
        run_step(sched)
    assert sched.requests["s"].num_output_tokens == 2


def test_observed_pauses_train_the_api_predictor(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, default_api_seconds=1.0)
    clock = SettableClock(1000.0)
    sched.set_clock(clock)
    start_session(sched, api_seconds=None)
    clock.now += 7.0
    resume(sched)
    assert sched.forecaster.api.predict("calc") == pytest.approx(7.0)
    assert sched.forecaster.api.predict("other") == pytest.approx(7.0)  # pooled
    assert sched.lamps_stats.resumed == 1


@pytest.mark.parametrize("api_seconds", [0.0, 1e5])
def test_abort_while_paused_frees_everything(make_vllm_scheduler: Any, api_seconds: float) -> None:
    sched = lamps(make_vllm_scheduler, allow_swap=False)
    total = free_blocks(sched)
    start_session(sched, api_seconds=api_seconds)
    sched.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    assert free_blocks(sched) == total
    assert "s" not in sched.requests
    assert sched.lamps_num_tracked == 0
    assert len(sched.waiting) == len(sched.kv_holding_waiting) == 0
    assert sched.num_waiting_for_streaming_input == 0
    assert not sched.has_unfinished_requests()


def test_closing_the_input_stream_finishes_the_session(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler)
    start_session(sched, api_seconds=0.0)
    # AsyncLLM sends a non-resumable request with the same id when the input stream ends.
    sched.add_request(make_request("s", [0], max_tokens=1, resumable=False))
    assert sched.lamps_num_tracked == 0
    assert not sched.has_unfinished_requests()


def test_bad_hints_warn_and_the_request_still_finishes(
    make_vllm_scheduler: Any, caplog: Any
) -> None:
    sched = lamps(make_vllm_scheduler)
    bad = {
        "predicted_output_tokens": -3,
        "predicted_api_seconds": "soon",
        "tool": 5,
        "api_return_tokens": float("nan"),
        "colour": "red",
    }
    sched.add_request(make_request("bad", list(range(30)), max_tokens=5, extra_args={"lamps": bad}))
    sched.add_request(
        make_request("worse", list(range(30)), max_tokens=5, extra_args={"lamps": [1, 2]})
    )
    finished = []
    for _ in range(10):
        _, outs = run_step(sched)
        finished += [
            o.request_id for v in outs.values() for o in v.outputs if o.finish_reason is not None
        ]
    assert sorted(finished) == ["bad", "worse"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for field in bad:
        assert any("bad" in m and f"'{field}'" in m for m in messages), field
    assert any("worse" in m for m in messages)
    assert sched.lamps_stats.hint_warnings == len(bad) + 1


@pytest.mark.parametrize("cls", LAMPS_CLASSES)
def test_side_table_does_not_leak(make_vllm_scheduler: Any, cls: type) -> None:
    sched = lamps(make_vllm_scheduler, cls, max_num_seqs=4)
    start_session(sched, api_seconds=1e5, rid="sess")
    for i in range(20):
        sched.add_request(make_request(f"r{i}", list(range(i, i + 20)), max_tokens=3))
    sched.finish_requests(["r0", "r1"], RequestStatus.FINISHED_ABORTED)
    for _ in range(40):
        run_step(sched)
    sched.finish_requests("sess", RequestStatus.FINISHED_ABORTED)
    assert not sched.requests
    assert sched.lamps_num_tracked == 0
    slots = sched.lamps_num_slots
    for i in range(20):
        sched.add_request(make_request(f"again{i}", list(range(i, i + 20)), max_tokens=1))
    for _ in range(20):
        run_step(sched)
    assert sched.lamps_num_tracked == 0
    assert sched.lamps_num_slots == slots  # freed slots were reused


def test_lamps_classes_subclass_vllm_schedulers() -> None:
    assert issubclass(LampsScheduler, AsyncScheduler)
    assert issubclass(LampsSyncScheduler, Scheduler)
    assert not issubclass(LampsSyncScheduler, AsyncScheduler)


def test_bad_config_raises_naming_the_key(make_vllm_scheduler: Any) -> None:
    with pytest.raises(ValueError, match="starvation_threshold"):
        lamps(make_vllm_scheduler, starvation_threshold=-1)
    with pytest.raises(ValueError, match="profile"):
        lamps(make_vllm_scheduler, profile="no-such-gpu")


def test_log_line_reports_the_interval(make_vllm_scheduler: Any, caplog: Any) -> None:
    sched = make_vllm_scheduler(
        LampsSyncScheduler,
        additional_config={"lamps": {"log_interval_s": 5.0, "allow_swap": False}},
    )
    clock = SettableClock(1000.0)
    sched.set_clock(clock)
    caplog.set_level(logging.INFO, logger="vllm.lamps")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("LAMPS: ")]

    # Each session's pause leaves the engine idle: what happened is logged then, not lost.
    start_session(sched, api_seconds=1e5, rid="d")
    assert len(lines()) == 1 and "pauses=1 preserve=0 discard=1 " in lines()[0]
    start_session(sched, api_seconds=0.0, rid="p")
    assert len(lines()) == 2 and "pauses=1 preserve=1 discard=0 " in lines()[1]
    run_step(sched)
    assert len(lines()) == 2  # idle steps with nothing new log nothing
    clock.now += 6.0
    run_step(sched)
    assert len(lines()) == 3
    # "p" was predicted to return at once, so 6 s later it is re-decided and discarded too.
    assert "pauses=0 preserve=0 discard=1 " in lines()[2] and "redecided=1 " in lines()[2]
    assert "ranking_ms=" in lines()[2] and "promotions=0" in lines()[2]


# ----- regressions ----------------------------------------------------------------------------


# 2**64 - 1 is the largest integer vLLM itself lets through extra_args.
@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 1e19, 1e308])
def test_out_of_range_hint_is_ignored_not_fatal(
    make_vllm_scheduler: Any, caplog: Any, value: float
) -> None:
    # Used to raise OverflowError from add_request (int64 score columns): an AsyncLLM engine
    # core died with it and every request failed.
    sched = lamps(make_vllm_scheduler)
    hints = {
        "api_return_tokens": value,
        "predicted_output_tokens": value,
        "predicted_api_seconds": value,
    }
    sched.add_request(
        make_request("big", list(range(40)), max_tokens=3, extra_args={"lamps": hints})
    )
    for _ in range(6):
        run_step(sched)
    assert "big" not in sched.requests
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for field in hints:
        assert any(f"'{field}'" in m and "out of range" in m for m in messages), field


def test_out_of_range_hint_at_resume_keeps_the_session_queued(make_vllm_scheduler: Any) -> None:
    # Used to raise while re-queueing the resumed session, which then sat in no queue.
    sched = lamps(make_vllm_scheduler, allow_swap=False)
    start_session(sched, api_seconds=1e5)
    sched.add_request(
        make_request(
            "s",
            [5, 6, 7],
            max_tokens=2,
            resumable=True,
            extra_args={"lamps": {"api_return_tokens": 2**63}},
        )
    )
    assert [r.request_id for r in sched.waiting] == ["s"]
    for _ in range(4):
        run_step(sched)
    assert sched.requests["s"].num_output_tokens == 2


@pytest.mark.parametrize("cls", LAMPS_CLASSES)
def test_unfinished_count_while_paused_for_new_requests(
    make_vllm_scheduler: Any, cls: type
) -> None:
    # vLLM subtracts every session waiting for input from the KV-holding queue; a discarded
    # session sits in `waiting`, so the count went to -1 and the engine stopped stepping.
    from vllm.v1.core.sched.interface import PauseState

    sched = lamps(make_vllm_scheduler, cls, allow_swap=False)
    start_session(sched, api_seconds=1e5)
    assert sched.lamps_state("s").strategy == Strategy.DISCARD
    sched.add_request(make_request("r", list(range(500, 540)), max_tokens=50))
    run_step(sched)
    sched.set_pause_state(PauseState.PAUSED_NEW)
    assert sched.get_num_unfinished_requests() == 1  # "r" is running and drains
    assert sched.has_requests()
    sched.set_pause_state(PauseState.UNPAUSED)
    assert sched.get_num_unfinished_requests() == 1


def test_pins_keep_a_finished_requests_blocks_for_the_next_prefix_lookup(
    make_vllm_scheduler: Any,
) -> None:
    # The mechanism a stateless session's finished turn is parked with: pinned blocks are
    # neither freed nor evicted, and the next request sharing the prefix takes them over.
    sched = lamps(make_vllm_scheduler, num_blocks=12)
    total = free_blocks(sched)
    prompt = list(range(64))
    sched.add_request(make_request("turn1", prompt, max_tokens=2))
    run_step(sched)
    pauses = sched.kv_pauses
    blocks = pauses.blocks_of(sched.requests["turn1"])
    assert len(blocks) == 4
    pauses.pin("session", blocks)
    for _ in range(3):
        run_step(sched)
    assert "turn1" not in sched.requests
    assert free_blocks(sched) == total - 4 and pauses.num_pinned_blocks == 4
    # Two requests fill the rest of the cache one after the other; unpinned, the first one's
    # freed blocks would queue behind turn1's and the second would evict turn1's.
    for hog in range(2):
        start = 1000 + 200 * hog
        sched.add_request(make_request(f"hog{hog}", list(range(start, start + 111)), max_tokens=1))
        for _ in range(3):
            run_step(sched)
    sched.add_request(make_request("turn2", [*prompt, 7, 99, 98], max_tokens=1))
    out, _ = run_step(sched)
    assert out.num_scheduled_tokens["turn2"] == 67 - 64  # the pinned prefix was found
    assert pauses.unpin("session") == 4 and pauses.num_pinned_blocks == 0
    with pytest.raises(ValueError, match="already holds"):
        pauses.pin("x", blocks[:1])
        pauses.pin("x", blocks[:1])
    pauses.unpin("x")
    for _ in range(3):
        run_step(sched)
    assert free_blocks(sched) == total
