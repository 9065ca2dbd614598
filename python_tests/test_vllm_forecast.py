"""What LAMPS expects of a request's life: the whole-life score, the learned count of later
calls, and the batch its costs are computed in."""

from __future__ import annotations

from typing import Any

import pytest
from plugin_helpers import lamps
from vllm.v1.request import RequestStatus

from lamps import CostModel
from lamps.harness import make_request, run_step
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.predictors import CallCountPredictor


def _session(rid: str, first_token: int, remaining_calls: int) -> Any:
    hints = {"tool": "chat", "predicted_output_tokens": 8, "predicted_api_seconds": 20.0,
             "api_return_tokens": 30, "remaining_calls": remaining_calls}  # fmt: skip
    return make_request(
        rid,
        list(range(first_token, first_token + 200)),
        max_tokens=8,
        resumable=True,
        extra_args={"lamps": hints},
    )


def _first_admitted(sched: Any) -> str:
    sched.add_request(_session("many", 0, remaining_calls=6))  # arrives first
    sched.add_request(_session("one", 1000, remaining_calls=0))
    out, _ = run_step(sched)
    return str(out.scheduled_new_reqs[0].req_id)


def test_the_score_counts_the_calls_still_to_come(make_vllm_scheduler: Any) -> None:
    # Same prompt, turn and next call; "many" holds memory through six more calls after it.
    sched = lamps(make_vllm_scheduler, max_num_seqs=1)
    assert _first_admitted(sched) == "one"


def test_a_one_call_horizon_cannot_tell_them_apart(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler, max_num_seqs=1, score_horizon="next_call")
    assert _first_admitted(sched) == "many"  # equal scores: arrival order


def test_later_calls_are_the_mean_residual_of_finished_requests() -> None:
    calls = CallCountPredictor()
    for n in (1, 1, 4, 4):
        calls.observe("chat", n)
    assert calls.later_calls("chat", 0) == pytest.approx((0 + 0 + 3 + 3) / 4)
    assert calls.later_calls("chat", 1) == pytest.approx(2.0)  # only the 4-call ones went on
    assert calls.later_calls("chat", 4) == 0.0  # past every one seen: expected to end
    assert calls.later_calls("unseen-tool", 0) == pytest.approx(1.5)  # the pooled histogram
    assert CallCountPredictor().later_calls(None, 0) == 0.0  # nothing seen: one call ahead


def test_finished_sessions_teach_the_call_count(make_vllm_scheduler: Any) -> None:
    sched = lamps(make_vllm_scheduler)
    hints = {"lamps": {"tool": "search", "predicted_api_seconds": 0.0}}
    sched.add_request(make_request("s", list(range(50)), max_tokens=2, resumable=True,
                                   extra_args=hints))  # fmt: skip
    for turn in range(3):
        while sched.requests["s"].status != RequestStatus.WAITING_FOR_STREAMING_REQ:
            run_step(sched)
        # The third chunk is not resumable: it closes the stream (vLLM's finished sentinel).
        sched.add_request(make_request("s", [9, 9], max_tokens=2, resumable=turn < 2,
                                       extra_args=hints))  # fmt: skip
    for _ in range(6):
        run_step(sched)
    assert "s" not in sched.requests
    # Two calls were made (the third chunk closed the stream): a new "search" request is
    # expected to make one more after its first, and one that made one none after its second.
    assert sched.forecaster.calls.later_calls("search", 0) == pytest.approx(1.0)
    assert sched.forecaster.calls.later_calls("search", 1) == pytest.approx(0.0)


def test_the_batch_counts_decodes_and_the_schedulers_budget() -> None:
    # A long prefill in progress does not eat the spare budget a rebuild would get: only the
    # decoding requests need tokens every step.
    batch = BatchEstimator(CostModel.profile("gptj-6b-a100"), 16, False, token_budget=2048)
    prefilling = make_request("p", list(range(1000)))
    prefilling.num_computed_tokens = 200
    decoding = [make_request(f"d{i}", list(range(100))) for i in range(2)]
    for r in decoding:
        r.num_computed_tokens = 100
    batch.step_scheduled(2048)
    state = batch.refresh([prefilling, *decoding], 10, 1.0, (64, 32))
    assert state.token_budget == 2048
    assert state.running_tokens_per_iteration == 2
    assert state.running_context_tokens == 400
    assert state.swap_queue_seconds == pytest.approx(96 * 458_752 / 25e9)
