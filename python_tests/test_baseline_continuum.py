"""Continuum (`lamps.baselines.continuum`) on vLLM's real scheduler, and its TTL rules.

Checks: the public code's fixed 2-second rule and the paper's cost-benefit rule; a stateless
program's finished turn stays pinned in the prefix cache until its TTL expires (and its next
turn takes the blocks over); a streaming session keeps its KV until the TTL, then discards it;
program-level FCFS; pins are given up under memory pressure only with at most one request
running.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from vllm.v1.request import RequestStatus

from lamps.baselines.continuum import ContinuumScheduler
from lamps.baselines.continuum_ttl import ToolHistory, code_ttl, negative_correlation, paper_ttl
from lamps.harness import SettableClock, make_request, run_step


def tokens(program: str, n: int) -> list[int]:
    return [(sum(map(ord, program)) * 7 + i * 13) % 500 + 3 for i in range(n)]


def turn(program: str, k: int, context: int, out: int, *, last: bool = False, **kw: Any) -> Any:
    hints = {"lamps": {"program": program, "tool": "calc", "last": last}}
    return make_request(
        f"{program}.{k}", tokens(program, context), max_tokens=out, extra_args=hints, **kw
    )


def make(make_vllm_scheduler: Any, ttl: str = "code", **kwargs: Any) -> tuple[Any, SettableClock]:
    sched = make_vllm_scheduler(
        ContinuumScheduler, additional_config={"continuum": {"ttl": ttl}}, **kwargs
    )
    clock = SettableClock()
    sched.set_clock(clock)
    return sched, clock


def run_until(sched: Any, done: Any, limit: int = 200) -> None:
    for _ in range(limit):
        if done():
            return
        run_step(sched)
    raise AssertionError("condition not reached")


# ----- the TTL rules ---------------------------------------------------------------------------


def test_code_ttl_pins_two_seconds_unless_the_tool_averages_longer() -> None:
    history = ToolHistory()
    assert code_ttl(history, None) == 0.0  # no tool call: no pin
    assert code_ttl(history, "calc") == 2.0  # an unseen tool: pinned
    history.observe_call("calc", 1.0)
    history.observe_call("calc", 2.5)
    assert code_ttl(history, "calc") == 2.0  # mean 1.75 s
    history.observe_call("calc", 5.0)
    assert code_ttl(history, "calc") == 0.0  # mean 2.83 s


def test_paper_ttl_is_the_cost_benefit_optimum() -> None:
    history = ToolHistory()
    recon = {1000: math.e, 10: 0.3}.__getitem__
    # Cold start (<= 100 calls seen): Exp(1 s) prior, eta = 1: tau = ln(B) for B > 1 s.
    assert paper_ttl(history, "calc", 1000, recon) == pytest.approx(1.0)
    assert paper_ttl(history, "calc", 10, recon) == 0.0
    assert paper_ttl(history, None, 1000, recon) == 0.0
    # Past the cold start: the empirical CDF. 60 calls of 0.2 s and 60 of 5 s: with B = e,
    # pinning 0.2 s catches half of the calls (0.5 e - 0.2 = 1.16 > 0); 5 s never pays.
    for _ in range(60):
        history.observe_call("calc", 0.2)
        history.observe_call("calc", 5.0)
    history.observe_program(3)  # (1, 2), (2, 1): eta = -Corr = 1
    assert history.eta == pytest.approx(1.0)
    assert paper_ttl(history, "calc", 1000, recon) == pytest.approx(0.2)
    # A tool seen <= 100 times uses every tool's calls.
    assert paper_ttl(history, "search", 1000, recon) == pytest.approx(0.2)
    assert paper_ttl(history, "calc", 10, recon) == 0.0  # 0.5 x 0.3 - 0.2 < 0: no pin
    assert negative_correlation([(1, 1)]) == 0.0


# ----- stateless programs ----------------------------------------------------------------------


def test_a_finished_turn_stays_pinned_until_its_ttl_expires(make_vllm_scheduler: Any) -> None:
    sched, clock = make(make_vllm_scheduler, num_blocks=40)
    pauses = sched.kv_pauses
    sched.add_request(turn("p", 0, 64, out=4))
    run_until(sched, lambda: "p.0" not in sched.requests)
    assert sched.program_pins.is_pinned("p") and pauses.num_pinned_blocks == 4
    assert sched.program_pins.expiry("p") == pytest.approx(2.0)
    clock.now = 1.9
    sched.schedule()
    assert pauses.num_pinned_blocks == 4
    clock.now = 2.0  # the TTL ran out and no turn of "p" waits: evicted
    sched.schedule()
    assert not sched.program_pins.is_pinned("p") and pauses.num_pinned_blocks == 0
    assert sched.continuum_stats()["expired"] == 1


def test_the_next_turn_takes_over_the_pinned_blocks(make_vllm_scheduler: Any) -> None:
    sched, clock = make(make_vllm_scheduler, num_blocks=14)  # 13 usable blocks
    pool = sched.kv_cache_manager.block_pool
    sched.add_request(turn("p", 0, 64, out=4))
    run_until(sched, lambda: "p.0" not in sched.requests)
    assert sched.kv_pauses.num_pinned_blocks == 4
    # Another program takes every free block: without the pin "p"'s blocks would be evicted.
    sched.add_request(turn("q", 0, pool.get_num_free_blocks() * 16 - 1, out=1, last=True))
    run_until(sched, lambda: "q.0" not in sched.requests)
    clock.now = 1.0  # the call returns within the TTL: the next turn carries the context
    sched.add_request(turn("p", 1, 64 + 4 + 8, out=2, last=True))
    out, _ = run_step(sched)
    new = {r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs}
    assert new == {"p.1": 64}  # the four pinned blocks came back through the prefix cache
    assert not sched.program_pins.is_pinned("p")  # the request holds them now
    run_until(sched, lambda: not sched.requests)
    assert sched.kv_pauses.num_pinned_blocks == 0
    assert sched.history.durations["calc"] == [pytest.approx(1.0)]


def test_programs_are_served_first_come_first_served(make_vllm_scheduler: Any) -> None:
    sched, _ = make(make_vllm_scheduler, num_blocks=100, max_num_seqs=1)
    sched.add_request(turn("a", 0, 20, out=2, arrival_time=1.0))
    run_until(sched, lambda: "a.0" not in sched.requests)
    sched.add_request(turn("hog", 0, 20, out=50, arrival_time=2.0))
    run_step(sched)  # the only slot is taken
    sched.add_request(turn("b", 0, 20, out=2, arrival_time=3.0))
    sched.add_request(turn("a", 1, 30, out=2, arrival_time=4.0))
    run_step(sched)
    # "a" arrived first as a program: its second turn goes ahead of "b"'s first.
    assert [r.request_id for r in sched.waiting.queued()] == ["a.1", "b.0"]


def test_pins_give_way_only_with_at_most_one_request_running(make_vllm_scheduler: Any) -> None:
    sched, _ = make(make_vllm_scheduler, num_blocks=14)  # 13 usable blocks
    sched.add_request(turn("p", 0, 96, out=4))  # 6 full blocks pinned at its end
    run_until(sched, lambda: "p.0" not in sched.requests)
    assert sched.kv_pauses.num_pinned_blocks == 6
    sched.add_request(turn("big", 0, 120, out=2))  # 8 blocks: more than the 7 left
    run_until(sched, lambda: "big.0" not in sched.requests)
    assert sched.continuum_stats()["pressure_unpins"] == 1
    assert not sched.program_pins.is_pinned("p")


# ----- streaming sessions ----------------------------------------------------------------------


def test_a_paused_session_keeps_its_kv_until_the_ttl_then_discards_it(
    make_vllm_scheduler: Any,
) -> None:
    sched, clock = make(make_vllm_scheduler, num_blocks=40)
    session = turn("s", 0, 40, out=4, resumable=True)
    sched.add_request(session)
    run_until(sched, lambda: session.status == RequestStatus.WAITING_FOR_STREAMING_REQ)
    sched.schedule()
    assert sched.kv_pauses.frontier("s.0") is None  # preserved for the TTL
    clock.now = 2.0
    sched.schedule()
    assert sched.kv_pauses.frontier("s.0") == 43  # expired: discarded
    assert sched.continuum_stats()["expired"] == 1


def test_pins_are_kept_while_a_running_request_can_be_preempted(
    make_vllm_scheduler: Any,
) -> None:
    sched, _ = make(make_vllm_scheduler, num_blocks=14)  # 13 usable blocks
    sched.add_request(turn("p", 0, 96, out=4))  # 6 blocks pinned at its end
    run_until(sched, lambda: "p.0" not in sched.requests)
    sched.add_request(turn("r1", 0, 40, out=40, last=True, arrival_time=10.0))
    sched.add_request(turn("r2", 0, 40, out=40, last=True, arrival_time=11.0))
    r2 = sched.requests["r2.0"]
    run_until(sched, lambda: r2.num_preemptions > 0)  # both grow past the 7 free blocks
    assert sched.program_pins.is_pinned("p")  # the latest program's request gave way instead
    assert sched.continuum_stats()["pressure_unpins"] == 0
    run_until(sched, lambda: not sched.requests, limit=400)


def test_a_bad_setting_is_named(make_vllm_scheduler: Any) -> None:
    with pytest.raises(ValueError, match=r"continuum.ttl must be one of \['paper', 'code'\]"):
        make(make_vllm_scheduler, ttl="fixed")
    with pytest.raises(ValueError, match=r"unknown settings \['window'\]"):
        make_vllm_scheduler(ContinuumScheduler, additional_config={"continuum": {"window": 3}})
