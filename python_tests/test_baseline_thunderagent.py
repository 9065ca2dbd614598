"""ThunderAgent (`lamps.baselines.thunderagent`): its admission rules, and as a gate on vLLM.

Checks each rule of its router (`thunderagent_router`, lines cited there): a new program is
admitted while the backend's capacity holds its tokens plus the per-program buffer and no
program waits; otherwise it waits in the global queue; the periodic check resumes waiting
programs in its priority order as capacity frees (Best Fit Decreasing), pauses acting programs
(fewest tokens first) and marks reasoning ones when over capacity; acting tokens are weighted;
a request waits at most 1,800 s. On vLLM's real scheduler: requests of admitted programs reach
vLLM at once, the others are held until the check resumes their program, none is lost or
stuck; and a short stateless replay of `builtin:agent` finishes every request.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lamps.baselines.thunderagent import ThunderAgentScheduler, program_of
from lamps.baselines.thunderagent_router import (
    REASONING,
    WAIT_TIMEOUT,
    Backend,
    Program,
    ProgramRouter,
    place_best_fit_decreasing,
)
from lamps.harness import make_request, run_step
from lamps.replay.engine import SimEngine
from lamps.replay.policies import make_policy
from lamps.replay.profiles import get_profile
from lamps.workloads import Arrival, TraceSegment, WorkloadRequest, load_trace


def router(capacity: int = 1000, **kwargs: Any) -> ProgramRouter:
    weight = kwargs.pop("acting_token_weight", 1.0)
    return ProgramRouter([Backend("b", capacity, weight)], **kwargs)


# ----- the router's rules ----------------------------------------------------------------------


def test_new_program_is_admitted_only_while_capacity_holds_it_and_none_waits() -> None:
    r = router(1000)
    assert r.on_request("a", 500, 0.0)  # remaining 1000 >= 500 + 100
    assert r.backends["b"].remaining() == 1000 - 500 - 100
    assert not r.on_request("b", 350, 0.1)  # remaining 400 < 350 + 100: queued
    assert not r.on_request("c", 10, 0.2)  # it would fit, but b waits: queued behind it
    assert list(r.queue) == ["b", "c"] and r.counts["queued"] == 2
    assert r.on_request("a", 520, 1.0)  # an admitted program's next turn goes on


def test_waiting_programs_resume_at_the_check_after_capacity_frees() -> None:
    r = router(1000)
    r.on_request("a", 500, 0.0)
    r.on_request("b", 350, 0.1)
    r.on_request("c", 10, 0.2)
    r.on_response("a", 520, 2.0)
    r.tick(4.9)
    assert r.take_resumed() == []  # the first check is at 5 s
    r.release("a")
    r.tick(5.0)  # 1000 - 0: b (450) and c (110) fit
    assert sorted(r.take_resumed()) == ["b", "c"]
    assert not r.queue and r.next_check == 10.0
    assert r.backends["b"].remaining() == 1000 - 360 - 200


def test_over_capacity_pauses_acting_programs_fewest_tokens_first() -> None:
    r = router(1000)
    assert r.on_request("a", 300, 0.0) and r.on_request("b", 300, 0.0)
    r.on_response("a", 450, 1.0)
    r.on_response("b", 500, 1.0)  # 950 + 200 > 1000
    r.tick(5.0)
    assert list(r.queue) == ["a"] and r.programs["a"].paused  # a had fewer tokens
    assert r.backends["b"].remaining() == 1000 - 500 - 100
    assert not r.on_request("a", 460, 6.0)  # its next turn waits for its resume
    assert r.programs["a"].status == REASONING and r.next_wakeup() == 10.0
    r.release("b")
    r.tick(10.0)
    assert r.take_resumed() == ["a"]


def test_over_capacity_with_none_acting_marks_every_reasoning_program() -> None:
    r = router(1000)
    assert r.on_request("a", 300, 0.0) and r.on_request("b", 200, 0.0)
    r.on_request("a", 700, 1.0)  # a's turn grew the backend past its capacity
    r.tick(5.0)
    # A mark leaves `remaining` as it was, so the loop marks both (the proxy's behaviour).
    assert r.programs["a"].marked_for_pause and r.programs["b"].marked_for_pause
    assert not r.queue
    r.on_response("b", 250, 6.0)  # paused at its response
    assert r.programs["b"].paused and not r.programs["b"].marked_for_pause
    assert list(r.queue) == ["b"]


def test_resume_order_is_reasoning_then_new_then_acting() -> None:
    r = router(2000)
    for p in ("x", "y", "z"):
        assert r.on_request(p, 500, 0.0)
        r.on_response(p, 500, 1.0)
    r.backends["b"].capacity_tokens = 100  # squeeze: every acting program is paused
    r.tick(5.0)
    assert set(r.queue) == {"x", "y", "z"}
    assert not r.on_request("n", 200, 6.0)  # a new program queues behind them
    assert not r.on_request("y", 600, 7.0)  # y's next turn: reasoning, waiting
    r.backends["b"].capacity_tokens = 1500  # room for 1,500 tokens with buffers
    r.tick(10.0)
    # Priority y (reasoning, 700), n (new, 300), then x (acting, 600) fits no more: 1,000 +
    # 600 > 1,500; z neither. The selection is placed largest first.
    assert r.take_resumed() == ["y", "n"]
    assert set(r.queue) == {"x", "z"}


def test_acting_tokens_are_weighted() -> None:
    r = router(1000, acting_token_weight=0.5)
    r.on_request("a", 600, 0.0)
    r.on_response("a", 800, 1.0)
    assert r.backends["b"].remaining() == 1000 - 400 - 100
    r.on_request("a", 810, 2.0)
    assert r.backends["b"].remaining() == 1000 - 810 - 100
    decay = router(1000, use_acting_token_decay=True)
    decay.on_request("a", 600, 0.0)
    decay.on_response("a", 800, 1.0)
    assert decay.backends["b"].remaining_with_decay(3.0) == 1000 - 200 - 100  # 800 * 2**-2


def test_a_request_waits_at_most_the_timeout_then_resumes_regardless() -> None:
    r = router(1000)
    r.on_request("a", 800, 0.0)
    assert not r.on_request("big", 5000, 1.0)  # never fits
    r.tick(1.0 + WAIT_TIMEOUT - 1)
    assert r.take_resumed() == []
    assert r.next_wakeup() == 1.0 + WAIT_TIMEOUT  # before the next check, at 1,805 s
    r.tick(1.0 + WAIT_TIMEOUT)
    assert r.take_resumed() == ["big"] and r.counts["forced"] == 1
    assert r.programs["big"].backend == "b"


def test_best_fit_decreasing_places_over_several_backends() -> None:
    small, large = Backend("s", 0), Backend("l", 0)
    programs = [Program(p, total_tokens=t) for p, t in (("p1", 300), ("p2", 700), ("p3", 50))]
    placed = place_best_fit_decreasing(programs, [(small, 500), (large, 900)])
    # p2 (800 with buffer) on l (900 -> 100: full), p1 (400) on s, p3 (150) fits nowhere left.
    assert [(p.program_id, b.url) for p, b in placed] == [("p2", "l"), ("p1", "s")]


# ----- the gate on vLLM's real scheduler ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def turn(program: str, k: int, n: int, out: int = 4, *, release: bool = False) -> Any:
    tokens = [(sum(map(ord, program)) * 7 + i * 13) % 500 + 3 for i in range(n)]
    hints = {"lamps": {"program_id": program, "release": release}}
    return make_request(f"{program}.{k}", tokens, max_tokens=out, extra_args=hints)


@pytest.fixture
def gate(make_vllm_scheduler: Any) -> tuple[ThunderAgentScheduler, Clock]:
    # 32 blocks of 16 tokens: the proxy reads a capacity of 512 tokens.
    sched = make_vllm_scheduler(ThunderAgentScheduler, num_blocks=32, block_size=16)
    clock = Clock()
    sched.set_clock(clock)
    return sched, clock


def test_gate_forwards_admitted_programs_and_holds_the_rest(gate: Any) -> None:
    sched, clock = gate
    assert sched.router.backends["vllm"].capacity_tokens == 32 * 16
    sched.add_request(turn("a", 0, 300))  # 300 + 100 <= 512
    sched.add_request(turn("b", 0, 100))  # remaining 112 < 200: held
    assert set(sched.requests) == {"a.0"} and sched.num_held == 1
    assert sched.get_num_unfinished_requests() == 2  # held requests keep the engine stepping
    for _ in range(10):
        run_step(sched)
    assert "a.0" not in sched.requests  # a finished its turn: acting, still counted
    assert sched.router.programs["a"].status == "acting"
    assert sched.router.programs["a"].total_tokens == 304
    clock.now = 5.0
    run_step(sched)
    assert sched.num_held == 1  # 512 - 304 - 100 = 108: b (200) still does not fit
    sched.add_request(turn("a", 1, 310, release=True))  # a's last turn goes on at once
    for _ in range(10):
        run_step(sched)
    assert "a" not in sched.router.programs  # released after its last response
    assert sched.num_held == 1  # waits for the next check
    clock.now = 10.0
    run_step(sched)  # the check resumes b; its request reaches vLLM now
    assert sched.num_held == 0 and "b.0" in sched.requests
    assert sched.requests["b.0"].arrival_time == 10.0
    for _ in range(10):
        run_step(sched)
    assert not sched.requests
    assert sched.thunderagent_stats()["held_requests"] == 1


def test_gate_loses_no_request_when_many_programs_compete(gate: Any) -> None:
    sched, clock = gate
    finished: set[str] = set()
    pending = {f"p{i}": 0 for i in range(6)}  # six programs, two turns each, ~200 tokens
    for p in pending:
        sched.add_request(turn(p, 0, 150))
    for _ in range(2000):
        if not pending:
            break
        clock.now += 0.05
        _, outputs = run_step(sched)
        for eco in outputs.values():
            for o in eco.outputs:
                if o.finish_reason is None:
                    continue
                finished.add(o.request_id)
                program, k = o.request_id.split(".")
                if int(k) == 0:
                    sched.add_request(turn(program, 1, 170, release=True))
                else:
                    del pending[program]
    assert len(finished) == 12 and not pending
    assert not sched.requests and sched.num_held == 0 and not sched.router.programs
    stats = sched.thunderagent_stats()
    assert stats["programs_queued"] > 0 and stats["programs_resumed"] > 0


def test_gate_drops_an_aborted_held_request(gate: Any) -> None:
    from vllm.v1.request import RequestStatus

    sched, _ = gate
    sched.add_request(turn("a", 0, 400))
    sched.add_request(turn("b", 0, 100))
    assert sched.num_held == 1
    sched.finish_requests("b.0", RequestStatus.FINISHED_ABORTED)
    assert sched.num_held == 0 and set(sched.requests) == {"a.0"}


def test_program_id_and_bad_settings(make_vllm_scheduler: Any) -> None:
    assert program_of(make_request("r", [1, 2, 3], session_id="s")) == "s"
    assert program_of(make_request("r", [1, 2, 3])) == "default"
    with pytest.raises(ValueError, match=r"'thunderagent'.*acting_weight"):
        make_vllm_scheduler(
            ThunderAgentScheduler, additional_config={"thunderagent": {"acting_weight": 1}}
        )


# ----- the replay --------------------------------------------------------------------------------


def test_an_idle_replay_wakes_for_the_proxys_check() -> None:
    base = get_profile("llama31-8b-h100")
    # 62 blocks of 16: the proxy sees 992 tokens; a (500 + 100) fits, then b (400 + 100) not.
    profile = dataclasses.replace(
        base, name="llama31-8b-tiny", memory_bytes=base.weight_bytes + 1000 * 131_072
    )
    a = WorkloadRequest("a", 500, (TraceSegment(100),))  # still decoding when b arrives
    b = WorkloadRequest("b", 400, (TraceSegment(10),))
    arrivals = [Arrival(0, 0.0, a), Arrival(1, 0.1, b)]
    engine = SimEngine(profile, make_policy("thunderagent"), arrivals)
    result = engine.run()  # without the timer: "replay stalled" once a is done
    first, second = result.records
    assert first.finished and 0.1 < first.finish_time < 5.0
    assert second.finished and second.first_token_time > 5.0  # resumed by the 5 s check
    assert result.policy_stats["programs_queued"] == 1
    assert result.policy_stats["held_seconds"] == pytest.approx(5.0 - 0.1)


def test_replay_of_agents_finishes_every_request_through_the_gate() -> None:
    base = get_profile("llama31-8b-h100")
    profile = dataclasses.replace(
        base, name="llama31-8b-small", memory_bytes=base.weight_bytes + 20_000 * 131_072
    )
    workload = load_trace("builtin:agent")
    arrivals = [Arrival(i, 0.5 * i, workload.requests[i]) for i in range(12)]
    policy = make_policy("thunderagent", cost_config=profile.scheduler_cost_config())
    engine = SimEngine(profile, policy, arrivals)
    result = engine.run()
    for rec in result.records:
        assert rec.finished, rec.arrival.request_id
        assert rec.output_tokens == rec.arrival.request.output_tokens
    sched = engine.scheduler
    assert not sched.requests and sched.num_held == 0 and not sched.router.programs
    assert sched.kv_cache_manager.usage == 0.0
    stats = result.policy_stats
    assert stats["programs_queued"] + stats["programs_paused"] > 0
    assert stats["held_requests"] > 0 and stats["held_seconds"] > 0
