"""Memory pressure in the LAMPS plug-in: paused KV is released before vLLM preempts a running
request, and no request is preempted over and over."""

from __future__ import annotations

from typing import Any

from plugin_helpers import lamps, start_session
from vllm.v1.request import RequestStatus

from lamps._core import Strategy
from lamps.harness import SettableClock, make_request, run_step


def grow_beside_a_paused_session(sched: Any, steps: int = 80) -> Any:
    """A preserved session holds 7 of 19 blocks; a request then grows past what is free."""
    sched.set_clock(SettableClock())
    start_session(sched, api_seconds=0.01, prompt_len=100)
    assert sched.lamps_state("s").strategy == Strategy.PRESERVE
    sched.add_request(make_request("r", list(range(4000, 4150)), max_tokens=160))
    for _ in range(steps):
        run_step(sched)
    return sched.requests["r"]


def test_paused_kv_is_released_before_a_running_request_is_preempted(
    make_vllm_scheduler: Any,
) -> None:
    sched = lamps(
        make_vllm_scheduler, num_blocks=20, allow_swap=False, release_paused_under_pressure=True
    )
    runner = grow_beside_a_paused_session(sched)
    assert runner.num_preemptions == 0
    assert sched.lamps_stats.paused_pressure_releases == 1
    view = sched.lamps_state("s")
    assert view.strategy == Strategy.DISCARD and view.frontier == 103
    assert runner.num_output_tokens > 40  # it went on growing into the released blocks


def test_without_the_release_vllm_preempts_the_running_request(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, num_blocks=20, allow_swap=False)  # the default
    runner = grow_beside_a_paused_session(sched)
    assert runner.num_preemptions >= 1
    assert sched.lamps_stats.paused_pressure_releases == 0
    assert sched.lamps_state("s").strategy == Strategy.PRESERVE


def _victims(sched: Any, protect: str | None) -> list[str]:
    # 12 usable blocks: three growing requests run out; "long" has the largest score.
    sched.add_request(make_request("long", list(range(90)), max_tokens=200))
    run_step(sched)
    sched.add_request(make_request("a", list(range(500, 530)), max_tokens=200))
    sched.add_request(make_request("b", list(range(700, 740)), max_tokens=200))
    if protect is not None:
        sched.requests[protect].num_preemptions = 2  # as if preempted twice already
    for _ in range(60):
        out, _ = run_step(sched)
        if out.preempted_req_ids:
            return sorted(out.preempted_req_ids)
    raise AssertionError("the cache never filled up")


def test_the_victim_is_the_largest_score(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, num_blocks=13, max_num_seqs=8)
    assert _victims(sched, None) == ["long"]


def test_a_request_preempted_max_preemptions_times_is_not_the_victim_again(
    make_vllm_scheduler: Any,
) -> None:
    sched = lamps(make_vllm_scheduler, num_blocks=13, max_num_seqs=8)
    victims = _victims(sched, "long")
    assert "long" not in victims
    assert sched.requests["long"].status == RequestStatus.RUNNING


def test_max_preemptions_zero_leaves_the_victim_to_the_score(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, num_blocks=13, max_num_seqs=8, max_preemptions=0)
    assert _victims(sched, "long") == ["long"]


def _watched_steps(sched: Any, steps: int) -> list[bool]:
    """For each step: whether the step's allocations went through the shortage hook's wrapper."""
    seen: list[bool] = []
    on_scheduled = sched.on_scheduled

    def spy(output: Any) -> None:  # runs inside schedule(), after every allocation
        seen.append("allocate_slots" in vars(sched.kv_cache_manager))
        on_scheduled(output)

    sched.on_scheduled = spy
    for _ in range(steps):
        run_step(sched)
        assert "allocate_slots" not in vars(sched.kv_cache_manager)  # taken off after the step
    return seen


def test_allocations_are_watched_only_in_steps_that_may_free_kv(make_vllm_scheduler: Any) -> None:
    plain = lamps(make_vllm_scheduler, num_blocks=20, release_paused_under_pressure=True)
    plain.add_request(make_request("r", list(range(4000, 4050)), max_tokens=20))
    assert not plain.may_free_kv_on_shortage()
    assert _watched_steps(plain, 5) == [False] * 5  # nothing paused or parked: nothing to free

    paused = lamps(
        make_vllm_scheduler, num_blocks=20, allow_swap=False, release_paused_under_pressure=True
    )
    paused.set_clock(SettableClock())
    start_session(paused, api_seconds=0.01, prompt_len=100)
    assert paused.lamps_state("s").strategy == Strategy.PRESERVE
    assert paused.may_free_kv_on_shortage()
    paused.add_request(make_request("r", list(range(4000, 4050)), max_tokens=20))
    assert _watched_steps(paused, 5) == [True] * 5

    kept = lamps(make_vllm_scheduler, num_blocks=20, allow_swap=False)  # release is off
    kept.set_clock(SettableClock())
    start_session(kept, api_seconds=0.01, prompt_len=100)
    assert not kept.may_free_kv_on_shortage()
