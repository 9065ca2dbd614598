"""The ablation switches of the LAMPS scheduler: each changes the one decision it names."""

from __future__ import annotations

from typing import Any

import pytest
from vllm.v1.request import RequestStatus

from lamps import BatchState, CostModel, Strategy
from lamps.harness import SettableClock, make_request, run_step
from lamps.mechanism.hints import Hints
from lamps.vllm import LampsSyncScheduler
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.config import LampsConfig
from lamps.vllm.counters import LampsStats
from lamps.vllm.pause_policy import PauseController
from lamps.vllm.state import RequestState

QUIET = {"log_interval_s": 0.0}


def lamps(make: Any, build: dict[str, Any] | None = None, **cfg: Any) -> Any:
    return make(LampsSyncScheduler, additional_config={"lamps": {**QUIET, **cfg}}, **(build or {}))


def test_unknown_switch_value_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"starvation_rule.*one of"):
        LampsConfig(starvation_rule="sometimes")
    with pytest.raises(ValueError, match="swap_policy"):
        LampsConfig(swap_policy="always")
    assert LampsConfig.load(environ={"LAMPS_REDECIDE": "every_step"}).redecide == "every_step"


@pytest.mark.parametrize(("order", "victim"), [("score", "long"), ("admission", "b")])
def test_running_order_decides_the_victim(
    make_vllm_scheduler: Any, order: str, victim: str
) -> None:
    # The same scenario as test_preemption_victim_is_largest_score: "long" holds the most
    # memory for the longest; vLLM's own order preempts the last admitted, "b".
    sched = lamps(make_vllm_scheduler, {"num_blocks": 13, "max_num_seqs": 8},
                  running_order=order)  # fmt: skip
    sched.add_request(make_request("long", list(range(90)), max_tokens=200))
    run_step(sched)
    sched.add_request(make_request("a", list(range(500, 530)), max_tokens=200))
    sched.add_request(make_request("b", list(range(700, 740)), max_tokens=200))
    victims: list[str] = []
    for _ in range(60):
        out, _ = run_step(sched)
        victims += sorted(out.preempted_req_ids or ())
        if victims:
            break
    assert victims and victims[0] == victim


def _starve(
    make: Any, clock: SettableClock | None = None, steps: int = 30, **cfg: Any
) -> list[str]:
    sched = lamps(make, {"max_num_seqs": 1}, **cfg)
    if clock is not None:
        sched.set_clock(clock)
    sched.add_request(make_request("big", list(range(400)), max_tokens=4))
    order: list[str] = []
    for i in range(steps):
        # A stream of small requests outranks "big" forever without promotion.
        sched.add_request(make_request(f"s{i}", list(range(3000 + 20 * i, 3010 + 20 * i)),
                                       max_tokens=1))  # fmt: skip
        if clock is not None:
            clock.now += 1.0
        out, _ = run_step(sched)
        order += [r.req_id for r in out.scheduled_new_reqs]
    return order


def test_starvation_none_never_promotes(make_vllm_scheduler: Any) -> None:
    assert "big" not in _starve(make_vllm_scheduler, starvation_rule="none")


def test_starvation_by_seconds_of_waiting(make_vllm_scheduler: Any) -> None:
    order = _starve(make_vllm_scheduler, SettableClock(100.0), starvation_rule="seconds",
                    starvation_seconds=5.0)  # fmt: skip
    # One step per second: promoted after about 5 steps of waiting.
    assert "big" in order and 4 <= order.index("big") <= 7


def test_starvation_relative_to_predicted_service(make_vllm_scheduler: Any) -> None:
    order = _starve(make_vllm_scheduler, SettableClock(100.0), starvation_rule="relative",
                    starvation_factor=1.0)  # fmt: skip
    assert "big" in order


def test_authors_rule_never_promotes_a_request_that_has_not_run(make_vllm_scheduler: Any) -> None:
    order = _starve(make_vllm_scheduler, starvation_rule="authors", starvation_threshold=5)
    assert "big" not in order  # with the paper's rule it runs within 7 steps


class RecordingPauses:
    """Stands in for the pause mechanism: records what the controller releases."""

    can_swap = True

    def __init__(self) -> None:
        self.released: list[tuple[str, str]] = []

    def discard(self, request: Any) -> None:
        self.released.append((request.request_id, "discard"))

    def swap(self, request: Any) -> bool:
        self.released.append((request.request_id, "swap"))
        return True


def _controller(**kw: Any) -> tuple[PauseController, RecordingPauses, BatchEstimator]:
    cost = CostModel.profile("gptj-6b-a100")
    batch = BatchEstimator(cost, 16, prefix_caching=False, token_budget=384)
    pauses = RecordingPauses()
    ctl = PauseController(pauses, batch, cost, lambda: 0, LampsStats(), **kw)  # type: ignore[arg-type]
    return ctl, pauses, batch


def _paused(rid: str, context: int) -> tuple[Any, RequestState]:
    request = make_request(rid, list(range(context + 1)), max_tokens=4, resumable=True)
    request.num_computed_tokens = context
    request.status = RequestStatus.WAITING_FOR_STREAMING_REQ
    return request, RequestState(rid, 0, Hints())


def test_every_step_redecides_before_the_call_overruns() -> None:
    # A busy batch makes recompute expensive: a 0.3 s call is preserved. When the batch
    # empties, recompute is cheap: re-deciding every step discards it at once; the default
    # waits for the call to overrun its prediction.
    for redecide, expect in (("every_step", [("p", "discard")]), ("overrun", [])):
        ctl, pauses, batch = _controller(allow_swap=False, redecide=redecide)
        batch.state = BatchState(
            token_budget=384, running_tokens_per_iteration=380.0, running_context_tokens=60_000.0
        )
        request, state = _paused("p", 2000)
        ctl.on_pause(request, state, now=0.0, api_seconds=0.3)
        assert state.strategy == Strategy.PRESERVE and not pauses.released
        batch.state = BatchState(
            token_budget=384, running_tokens_per_iteration=1.0, running_context_tokens=0.0
        )
        ctl.before_step(0.05, {"p": request}, lambda rid, state=state: state)
        assert pauses.released == expect, redecide


def test_demote_releases_all_but_the_costliest() -> None:
    ctl, pauses, batch = _controller(allow_swap=False, redecide="demote")
    batch.state = BatchState(
        token_budget=384, running_tokens_per_iteration=1.0, running_context_tokens=0.0
    )
    pauses_and_states = {}
    for rid, context in (("a", 500), ("b", 3000), ("c", 1000)):
        request, state = _paused(rid, context)
        ctl.on_pause(request, state, now=0.0, api_seconds=100.0)
        assert state.strategy == Strategy.PRESERVE  # every pause starts preserved
        pauses_and_states[rid] = (request, state)
    ctl.before_step(0.01, {k: v[0] for k, v in pauses_and_states.items()},
                    lambda rid: pauses_and_states[rid][1])  # fmt: skip
    assert sorted(pauses.released) == [("a", "discard"), ("c", "discard")]


def test_budgeted_swap_takes_the_next_best_when_it_does_not_fit() -> None:
    ctl, pauses, batch = _controller(swap_policy="budgeted")
    batch.state = BatchState(
        token_budget=384, running_tokens_per_iteration=380.0, running_context_tokens=60_000.0
    )
    ctl.before_step(0.0, {}, lambda rid: None)  # this step's allowance
    small, s1 = _paused("small", 64)
    huge, s2 = _paused("huge", 60_000)
    for request, state in ((small, s1), (huge, s2)):
        ctl._release(request, state, Strategy.SWAP, 100.0)
    assert ("small", "swap") in pauses.released
    assert ("huge", "swap") not in pauses.released


def test_largest_saving_first_spends_the_allowance_by_saving() -> None:
    ctl, pauses, batch = _controller(swap_policy="largest_saving_first")
    batch.state = BatchState(
        token_budget=384, running_tokens_per_iteration=300.0, running_context_tokens=30_000.0
    )
    ctl.before_step(0.0, {}, lambda rid: None)
    saving = {}
    for rid, context in (("small", 64), ("large", 256)):
        request, state = _paused(rid, context)
        state.pause_started = 0.0
        saving[rid] = ctl._swap_saving(request, 100.0)
        ctl._release(request, state, Strategy.SWAP, 100.0)
    assert saving["large"] > saving["small"] > 0
    assert not pauses.released  # held until the next step hands out its allowance
    ctl.before_step(0.01, {}, lambda rid: None)
    assert pauses.released[0] == ("large", "swap")  # the larger saving goes first


@pytest.mark.parametrize("swap_policy", ["budgeted", "largest_saving_first"])
def test_an_overrun_swap_held_by_its_budget_waits_for_the_next_step(swap_policy: str) -> None:
    # A preserved call overruns and is re-decided to swap, but the swap waits for an allowance
    # (none this step): the pause stays preserved and the step goes on (it used to re-decide
    # the same pause forever within one step).
    ctl, pauses, batch = _controller(swap_policy=swap_policy)
    batch.state = BatchState(
        token_budget=384, running_tokens_per_iteration=380.0, running_context_tokens=60_000.0
    )
    request, state = _paused("p", 30_000)
    ctl.on_pause(request, state, now=0.0, api_seconds=0.001)
    assert state.strategy == Strategy.PRESERVE
    batch.state = BatchState(
        token_budget=384, running_tokens_per_iteration=1.0, running_context_tokens=0.0
    )  # nothing hides a copy: this step's allowance is 0
    ctl.before_step(50.0, {"p": request}, lambda rid: state)
    if swap_policy == "largest_saving_first":  # held for the next step's allowance
        assert state.strategy == Strategy.PRESERVE and not pauses.released
    else:  # the best strategy without swap, at once
        assert pauses.released == [("p", "discard")]
