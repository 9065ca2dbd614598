"""Sessions across stateless turns (lamps.vllm.sessions) through vLLM's real scheduler on CPU.

A turn of a session is a request with `session_id` that finishes; the session's next request
resends the whole conversation. Tokens sampled by the harness are all 7, so a next turn's
prompt is `prompt + [7] * outputs + tool result`, as a client resending the conversation sends.
"""

from __future__ import annotations

from typing import Any

import pytest
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from lamps._core import Strategy
from lamps.harness import SettableClock, make_request, run_step
from lamps.vllm import LampsScheduler, LampsSyncScheduler

BLOCK = 16
# Recompute expensive (a large model): a pinned turn is the least waste for gaps of seconds.
EXPENSIVE_RECOMPUTE = {"a_ms_per_token": 5.0, "c_ms": 20.0, "kv_bytes_per_token": 1e6,
                       "link_bytes_per_second": 1e9}  # fmt: skip


def build(make: Any, cls: type = LampsSyncScheduler, num_blocks: int = 64, **lamps: Any) -> Any:
    cfg = {"log_interval_s": 0.0, "allow_swap": False, "cost_model": EXPENSIVE_RECOMPUTE,
           **lamps}  # fmt: skip
    if cls is Scheduler:
        sched = make(cls, num_blocks=num_blocks, max_num_seqs=8)
    else:
        sched = make(cls, num_blocks=num_blocks, max_num_seqs=8, additional_config={"lamps": cfg})
    clock = SettableClock(100.0)
    if hasattr(sched, "set_clock"):
        sched.set_clock(clock)
    sched.test_step_seconds = 0.0  # how far the clock moves per engine step
    sched.test_clock = clock
    return sched, clock


def step(sched: Any) -> Any:
    sched.test_clock.now += sched.test_step_seconds
    return run_step(sched)


def finish(sched: Any, rid: str, steps: int = 40) -> None:
    for _ in range(steps):
        step(sched)
        if rid not in sched.requests:
            return
    raise AssertionError(f"{rid} did not finish")


def turn(
    sched: Any,
    rid: str,
    prompt: list[int],
    sid: str | None = "s",
    max_tokens: int = 4,
    **hints: Any,
) -> list[int]:
    xargs = {f"lamps_{k}": v for k, v in hints.items()}
    sched.add_request(make_request(rid, prompt, max_tokens=max_tokens, session_id=sid,
                                   extra_args=xargs or None))  # fmt: skip
    finish(sched, rid)
    return prompt + [7] * max_tokens


def churn(sched: Any, n: int, base: int = 100_000, length: int = 160) -> None:
    """Unrelated one-turn requests that allocate `n * length` tokens of fresh blocks."""
    for i in range(n):
        rid = f"churn{base + i}"
        start = base + i * length
        sched.add_request(make_request(rid, list(range(start, start + length)), max_tokens=2))
        finish(sched, rid)


def free(sched: Any) -> int:
    return sched.kv_cache_manager.block_pool.get_num_free_blocks()


def total(sched: Any) -> int:
    return sched.kv_cache_manager.block_pool.num_gpu_blocks - 1  # the null block


def test_preserved_turn_survives_cache_churn_and_is_taken_over(make_vllm_scheduler: Any) -> None:
    sched, _ = build(make_vllm_scheduler)
    context = turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.5, tool="search")
    parked = sched.lamps_sessions.session("s").parked
    # Parked on an idle engine: the prefix cache keeps it for free, nothing is pinned yet.
    assert parked.strategy == Strategy.DISCARD
    assert parked.tokens == (len(context) - 1) // BLOCK * BLOCK  # full blocks computed
    sched.test_step_seconds = 0.01
    churn(sched, 12)  # 1,920 fresh tokens through a 1,008-token cache: LRU evicts everything
    # ... but once other requests allocate, keeping the turn is the least waste: pinned again.
    assert parked.strategy == Strategy.PRESERVE
    assert sched.kv_pauses.num_pinned_blocks == parked.tokens // BLOCK
    sched.add_request(make_request("t2", [*context, 11, 12, 13], max_tokens=2, session_id="s"))
    out, _ = step(sched)
    new = {r.req_id: r for r in out.scheduled_new_reqs}
    assert new["t2"].num_computed_tokens == parked.tokens  # the whole parked turn, from cache
    stats = sched.lamps_stats
    assert (stats.takeovers, stats.parked_tokens, stats.recovered_tokens) == (
        1, parked.tokens, parked.tokens)  # fmt: skip
    assert sched.kv_pauses.num_pinned_blocks == 0
    assert (stats.session_discarded, stats.session_redecided) == (1, 1)


def test_turn_with_an_immediate_next_request_is_pinned_at_once(make_vllm_scheduler: Any) -> None:
    sched, _ = build(make_vllm_scheduler)
    turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.0)
    parked = sched.lamps_sessions.session("s").parked
    assert parked.strategy == Strategy.PRESERVE
    assert sched.kv_pauses.num_pinned_blocks == parked.tokens // BLOCK == 12
    assert sched.lamps_stats.session_preserved == 1
    assert free(sched) == total(sched) - 12


@pytest.mark.parametrize("cls", [Scheduler, "lamps-sessions-off"])
def test_without_parking_the_same_churn_loses_the_turn(make_vllm_scheduler: Any, cls: Any) -> None:
    # The regression the test above guards: vLLM's LRU prefix cache evicts the finished turn.
    if cls == "lamps-sessions-off":
        sched, _ = build(make_vllm_scheduler, sessions=False)
    else:
        sched, _ = build(make_vllm_scheduler, Scheduler)
    context = turn(sched, "t1", list(range(1, 200)))
    churn(sched, 12)
    sched.add_request(make_request("t2", [*context, 11, 12, 13], max_tokens=2, session_id="s"))
    out, _ = run_step(sched)
    assert {r.req_id: r for r in out.scheduled_new_reqs}["t2"].num_computed_tokens == 0


def test_long_predicted_gap_is_discarded_to_the_prefix_cache(make_vllm_scheduler: Any) -> None:
    sched, _ = build(make_vllm_scheduler)
    turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=1e5)
    assert sched.lamps_sessions.session("s").parked.strategy == Strategy.DISCARD
    assert sched.kv_pauses.num_pinned_blocks == 0
    assert free(sched) == total(sched)
    assert sched.lamps_stats.session_discarded == 1


def test_overrunning_gap_is_redecided_and_the_hard_cap_applies(make_vllm_scheduler: Any) -> None:
    sched, clock = build(make_vllm_scheduler, session_max_pin_s=30.0)
    turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.0)
    assert sched.kv_pauses.num_pinned_blocks > 0
    clock.now += 1.0  # overran on an idle engine: the prefix cache keeps it for free
    step(sched)
    assert sched.kv_pauses.num_pinned_blocks == 0
    assert sched.lamps_stats.session_redecided == 1
    sched2, clock2 = build(make_vllm_scheduler, session_max_pin_s=2.0)
    turn(sched2, "t1", list(range(1, 200)), predicted_api_seconds=0.0)
    clock2.now += 2.5
    step(sched2)
    assert sched2.lamps_stats.cap_releases == 1 and sched2.kv_pauses.num_pinned_blocks == 0


def test_memory_pressure_releases_pins_before_preempting(make_vllm_scheduler: Any) -> None:
    # 24 blocks: two parked sessions pin 2 x 7 blocks; a request that needs more than the
    # rest must get them from the pins, not by preempting the running request.
    sched, _ = build(make_vllm_scheduler, num_blocks=25, session_max_parked_fraction=1.0)
    turn(sched, "a1", list(range(1, 120)), sid="a", predicted_api_seconds=0.0)
    turn(sched, "b1", list(range(500, 620)), sid="b", predicted_api_seconds=0.0)
    assert sched.kv_pauses.num_pinned_blocks == 14
    sched.add_request(make_request("run", list(range(1000, 1140)), max_tokens=60))  # 13 blocks
    preempted: set[str] = set()
    for _ in range(80):
        out, _ = run_step(sched)
        preempted |= set(out.preempted_req_ids or ())
        if "run" not in sched.requests:
            break
    assert "run" not in sched.requests
    assert not preempted
    assert sched.lamps_stats.pressure_releases >= 1
    assert sched.kv_pauses.num_pinned_blocks < 14


def test_parked_memory_is_bounded(make_vllm_scheduler: Any) -> None:
    sched, _ = build(make_vllm_scheduler, num_blocks=65, session_max_parked_fraction=0.2)
    turn(sched, "a1", list(range(1, 120)), sid="a", predicted_api_seconds=0.0)  # 7 blocks
    turn(sched, "b1", list(range(500, 620)), sid="b", predicted_api_seconds=0.0)  # 7 more
    assert sched.kv_pauses.num_pinned_blocks <= int(0.2 * 65)
    assert sched.lamps_stats.cap_releases == 1


def test_session_end_hint_and_aborts_free_everything(make_vllm_scheduler: Any) -> None:
    sched, _ = build(make_vllm_scheduler)
    context = turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.0)
    assert sched.kv_pauses.num_pinned_blocks > 0
    turn(sched, "t2", [*context, 3, 4], predicted_api_seconds=0.0, session_end=1)
    assert sched.lamps_sessions.session("s") is None
    assert sched.kv_pauses.num_pinned_blocks == 0 and free(sched) == total(sched)
    # A disconnect (an abort without a tool hint) ends the session too.
    turn(sched, "u1", list(range(300, 400)), sid="u", predicted_api_seconds=0.0)
    sched.add_request(make_request("u2", list(range(300, 420)), max_tokens=50, session_id="u"))
    run_step(sched)
    sched.finish_requests("u2", RequestStatus.FINISHED_ABORTED)
    assert sched.lamps_sessions.session("u") is None
    assert sched.kv_pauses.num_pinned_blocks == 0
    # A stop string also reaches the engine as an abort: with a tool hint the turn parks.
    sched.add_request(make_request("v1", list(range(600, 700)), max_tokens=50, session_id="v",
                                   extra_args={"lamps_tool": "search"}))  # fmt: skip
    for _ in range(3):
        run_step(sched)
    sched.finish_requests("v1", RequestStatus.FINISHED_ABORTED)
    assert sched.lamps_sessions.session("v").parked is not None
    assert sched.lamps_stats.sessions_ended == 2


def test_idle_session_expires(make_vllm_scheduler: Any) -> None:
    sched, clock = build(make_vllm_scheduler, session_idle_timeout_s=10.0, session_max_pin_s=60)
    turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.0, tool="human")
    clock.now += 11.0
    sched.add_request(make_request("other", list(range(900, 920)), max_tokens=1))
    finish(sched, "other")
    assert sched.lamps_sessions.session("s") is None
    assert sched.kv_pauses.num_pinned_blocks == 0 and free(sched) == total(sched)


@pytest.mark.parametrize("cls", [LampsSyncScheduler, LampsScheduler])
def test_many_sessions_leave_no_blocks_behind(make_vllm_scheduler: Any, cls: type) -> None:
    sched, _ = build(make_vllm_scheduler, cls, num_blocks=80)
    contexts = {f"s{i}": list(range(1000 * i + 1, 1000 * i + 60 + 9 * i)) for i in range(5)}
    for k in range(4):
        for sid, ctx in contexts.items():
            last = k == 3
            contexts[sid] = turn(sched, f"{sid}-{k}", ctx + [k + 2] * 5, sid=sid,
                                 predicted_api_seconds=0.0, session_end=int(last))  # fmt: skip
    assert sched.lamps_stats.takeovers == 15
    assert sched.lamps_stats.recovered_tokens == sched.lamps_stats.parked_tokens
    assert sched.lamps_sessions.num_sessions == 0
    assert sched.kv_pauses.num_pinned_blocks == 0 and free(sched) == total(sched)


@pytest.mark.parametrize("sessions", [True, False])
def test_next_turn_is_ranked_with_the_session_history(
    make_vllm_scheduler: Any, sessions: bool
) -> None:
    # Both sessions call "calc"; "long" has written 40 tokens a turn, "short" 1 token.
    sched, _ = build(make_vllm_scheduler, sessions=sessions)
    ctx = {"long": list(range(1, 60)), "short": list(range(1000, 1150))}
    for k in range(3):
        for sid, n in (("long", 40), ("short", 1)):
            ctx[sid] = turn(sched, f"{sid}{k}", [*ctx[sid], k + 2], sid=sid, max_tokens=n,
                            tool="calc", predicted_api_seconds=0.0)  # fmt: skip
    size = max(len(c) for c in ctx.values()) + 1
    for sid in ("long", "short"):  # "long" arrives first, the same size
        prompt = ctx[sid] + [9] * (size - len(ctx[sid]))
        sched.add_request(make_request(f"{sid}-next", prompt, max_tokens=64, session_id=sid,
                                       extra_args={"lamps_tool": "calc"}))  # fmt: skip
    order = [r.request_id for r in sched.waiting][:2]
    assert order == (["short-next", "long-next"] if sessions else ["long-next", "short-next"])


def test_prefix_cache_reset_is_not_blocked_by_pins(make_vllm_scheduler: Any) -> None:
    # vLLM resets the prefix cache only when no block is in use (weight updates, the
    # /reset_prefix_cache endpoint): pinned turns would make it fail forever.
    sched, _ = build(make_vllm_scheduler)
    turn(sched, "t1", list(range(1, 200)), predicted_api_seconds=0.0)
    assert sched.kv_pauses.num_pinned_blocks > 0
    assert sched.reset_prefix_cache()
    assert sched.kv_pauses.num_pinned_blocks == 0 and free(sched) == total(sched)


def test_intact_finds_the_cached_prefix_of_a_parked_turn() -> None:
    # A turn's blocks are evicted tail first: the intact prefix ends where eviction reached.
    from types import SimpleNamespace

    from lamps.vllm.sessions.state import ParkedTurn

    blocks = [SimpleNamespace(block_hash=f"h{i}") for i in range(6000)]
    turn = ParkedTurn("k", Strategy.DISCARD, [], 6000 * 16, 6000 * 16, 0.0, 1.0, None, 0,
                      blocks=blocks, block_keys=[b.block_hash for b in blocks])  # fmt: skip
    assert turn.intact() == 6000
    for b in blocks[4321:]:
        b.block_hash = None  # evicted
    assert turn.intact() == 4321
    blocks[0].block_hash = "reused"  # a shared head freed earlier went first
    assert turn.intact() == 0


@pytest.mark.parametrize("aware", [True, False])
def test_a_turn_whose_prefix_is_parked_ranks_before_an_equal_new_one(
    make_vllm_scheduler: Any, aware: bool
) -> None:
    # Session "s" parked 192 tokens; "new" (another session, first turn) arrives first with a
    # prompt as long as s's next one. With 64-token steps s's turn owes one chunk of prefill,
    # new's four.
    cfg = {"log_interval_s": 0.0, "allow_swap": False, "session_prefix_aware": aware}
    sched = make_vllm_scheduler(
        LampsSyncScheduler, num_blocks=64, max_num_seqs=8, max_num_batched_tokens=64,
        additional_config={"lamps": cfg},
    )  # fmt: skip
    sched.test_step_seconds, sched.test_clock = 0.0, SettableClock(100.0)
    sched.set_clock(sched.test_clock)
    context = turn(sched, "t1", list(range(1, 200)))
    sched.add_request(make_request("new", list(range(5000, 5000 + len(context) + 3)),
                                   max_tokens=2, session_id="other"))  # fmt: skip
    sched.add_request(make_request("t2", [*context, 11, 12, 13], max_tokens=2, session_id="s"))
    out, _ = step(sched)
    first = out.scheduled_new_reqs[0].req_id
    assert first == ("t2" if aware else "new")
