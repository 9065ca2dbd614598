"""vLLM scheduler tests that LAMPS fails on purpose: strict expected failures of the conformance
run (scripts/conformance). Verified against vLLM 0.32.0.

Each entry names the vLLM test (node id; without `[params]` it covers every parametrization),
the assertion that fails, why LAMPS legitimately differs, the LAMPS classes it applies to (both
when empty) and the order-agnostic version of the same scenario in
python_tests/test_conformance_scenarios.py. An entry whose test passes fails the run (strict
xfail), and so does an entry that matches no collected test: keep the list exact.

Kinds: ordering (LAMPS admits the smallest memory-over-time score first, not FCFS), victim
(LAMPS preempts the running request with the largest score, not the last admitted), priority
(LAMPS replaces --scheduling-policy priority by its own order), strategy (a paused session's
KV may be discarded or swapped instead of preserved), construction (the test bypasses
`__init__`, so LAMPS' own state does not exist).

Not here, on purpose (real LAMPS bugs, reported, failing until fixed):
- test_scheduler.py::test_pause_new_ignores_streaming_session_waiting_for_input (sync): under
  PAUSED_NEW a discarded paused session makes get_num_unfinished_requests() return -1.
- test_async_scheduler.py::test_kv_pressure_preemption_with_inflight_output[0] (async): a
  request finished by its in-flight token while preempted stays in the ranked waiting heap.
"""

from __future__ import annotations

from dataclasses import dataclass

SYNC = ("LampsSyncScheduler",)
ASYNC = ("LampsScheduler",)
CORE = "tests/v1/core/test_scheduler.py::"
ASYNC_CORE = "tests/v1/core/test_async_scheduler.py::"
STREAMING = "tests/v1/streaming_input/test_scheduler_streaming.py::TestStreamingScheduler::"

_PRIORITY = (
    "LAMPS replaces --scheduling-policy priority by its own order (with a warning) and "
    "ignores Request.priority"
)


@dataclass(frozen=True)
class ExpectedFailure:
    test: str  # vLLM node id; without [params]: every parametrization
    kind: str  # ordering | victim | priority | strategy | construction
    assertion: str  # the vLLM assertion that fails (file line in vLLM 0.32.0)
    reason: str  # why LAMPS legitimately differs
    classes: tuple[str, ...]  # LAMPS classes it applies to; () = both
    scenario: str  # order-agnostic test in python_tests/test_conformance_scenarios.py


EXPECTED_FAILURES: list[ExpectedFailure] = [
    ExpectedFailure(
        CORE + "test_schedule_order",
        "ordering",
        "len(scheduler_output1.scheduled_new_reqs) == 2 (chunked, :1440) / == 1 (:1445)",
        "LAMPS admits the two 10-token prompts before the 800-token ones, so the first step "
        "admits 3 requests; the test asserts FCFS, where a short prompt never passes a long one",
        SYNC,
        "test_mixed_lengths_first_step_respects_limits_and_all_finish",
    ),
    ExpectedFailure(
        CORE + "test_preempt_during_execution",
        "victim",
        "scheduler.running[0] == requests[0] (:1488); requests[1] should be PREEMPTED",
        "out of blocks, LAMPS preempts the largest score, request 0 (81 tokens held), "
        "not the last admitted request 1 (80 tokens, its step in flight)",
        SYNC,
        "test_preemption_with_another_step_in_flight_keeps_its_token",
    ),
    ExpectedFailure(
        CORE + "test_scheduler_reset_prefix_cache",
        "ordering",
        "scheduler.waiting[i] == request (:1754): TypeError, not subscriptable",
        "the test indexes vLLM's FCFS deque; LAMPS' waiting queue is ranked by score and, like "
        "vLLM's own PriorityRequestQueue, has no positions (indexing is not RequestQueue API)",
        SYNC,
        "test_reset_prefix_cache_moves_every_running_request_back",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_basic_ordering",
        "priority",
        "scheduled_req_ids == ['1', '2', '0'] (:3651)",
        _PRIORITY + ": equal 10-token prompts tie on score and run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_mixed_priority_and_arrival",
        "priority",
        "scheduled_req_ids == ['3', '2', '1', '0'] (:3709)",
        _PRIORITY + ": equal prompts run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption",
        "priority",
        "lo1_req.status == RequestStatus.PREEMPTED (:3803)",
        _PRIORITY + ": the victim is the largest score, hi1 (15 tokens left to decode), "
        "not the lowest priority lo1 (14 left)",
        SYNC,
        "test_priority_preemption_under_kv_pressure_keeps_one_running",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption_victim_selection",
        "priority",
        "output.scheduled_new_reqs[0].req_id == '2' (:3890)",
        _PRIORITY + ": with one seat the first arrival (equal prompts) is admitted",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_waiting_queue_order",
        "priority",
        "output.scheduled_new_reqs[0].req_id == '3' (:3967)",
        _PRIORITY + ": with one seat the first arrival (equal prompts) is admitted",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_with_limited_slots",
        "priority",
        "'3' in scheduled_req_ids (:4037)",
        _PRIORITY + ": the two seats go to the first two arrivals (equal prompts)",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_heap_property",
        "priority",
        "scheduled_priorities == sorted(priorities) (:4099)",
        _PRIORITY + ": one seat, equal prompts, so requests run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption_and_resumption_when_out_of_kv",
        "priority",
        "scheduled_cached_reqs.req_ids[0] == request_high.request_id (:4360)",
        _PRIORITY + ": out of blocks the victim is the largest score, the high-priority "
        "request (33 tokens, 15 left), so the low-priority one keeps running",
        SYNC,
        "test_preempted_request_resumes_with_prompt_and_decoded_tokens",
    ),
    ExpectedFailure(
        CORE + "test_abort_request_when_structured_output_fsm_cannot_advance",
        "construction",
        "update_from_output raises AttributeError: no attribute '_table' (:4254)",
        "the test builds the scheduler with object.__new__ and sets vLLM's attributes by hand, "
        "so LAMPS' request table (made in __init__) does not exist",
        SYNC,
        "test_grammar_rejecting_a_token_finishes_only_that_request_with_an_error",
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_abort_request_when_structured_output_fsm_cannot_advance",
        "construction",
        "update_from_output raises AttributeError: no attribute '_table' (:355)",
        "the test builds the scheduler with object.__new__ and sets vLLM's attributes by hand, "
        "so LAMPS' request table (made in __init__) does not exist",
        ASYNC,
        "test_grammar_rejecting_a_token_finishes_only_that_request_with_an_error",
    ),
    ExpectedFailure(
        CORE + "test_fcfs_mixed_blocked_types_remote_load_drains_first",
        "ordering",
        "list(scheduler.waiting) == [req_grammar, req_stream, req_tail] (:5622)",
        "LAMPS admits the 1-token `tail` ahead of the 20-token `regular`, so `tail` is no "
        "longer waiting (and its queue lists the paused session after schedulable requests)",
        SYNC,
        "test_blocked_waiting_requests_of_every_kind_all_drain",
    ),
    ExpectedFailure(
        CORE + "test_async_load_reservation_prevents_wedge_e2e",
        "ordering",
        "a.status == RequestStatus.WAITING_FOR_REMOTE_KVS (:6952)",
        "LAMPS admits the smaller request B's load first, so the reservation holds back A, "
        "the first arrival, instead of B",
        SYNC,
        "test_async_kv_loads_never_wedge_and_both_finish",
    ),
    ExpectedFailure(
        STREAMING + "test_streaming_e2e_lifecycle",
        "strategy",
        "session in scheduler.kv_holding_waiting (:602)",
        "at the pause LAMPS discards the session's KV (it picks Swap for the default 1 s API "
        "prediction; with no swap path that is Discard), so it waits in `waiting`; the test "
        "assumes vLLM's only strategy, Preserve",
        SYNC,
        "test_session_lifecycle_keeps_context_whatever_the_strategy",
    ),
    ExpectedFailure(
        CORE + "test_pause_new_ignores_streaming_session_waiting_for_input",
        "strategy",
        "session in scheduler.kv_holding_waiting (:2699)",
        "at the pause LAMPS discards the session's KV (it picks Swap for the default 1 s API "
        "prediction; with no swap path that is Discard), so it waits in `waiting`; the test "
        "assumes vLLM's only strategy, Preserve. What it checks next (0 unfinished requests "
        "under PAUSED_NEW) holds for every strategy in the scenario",
        SYNC,
        "test_paused_session_is_not_unfinished_under_paused_new",
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_kv_pressure_preempt_mid_handoff[kv_producer-False]",
        "victim",
        "handoff.status == RequestStatus.PREEMPTED (:751)",
        "LAMPS preempts `decoder` (8 tokens to decode: the larger score), not the last "
        "admitted `handoff`",
        ASYNC,
        "test_preempting_a_request_with_its_last_token_in_flight",
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_kv_pressure_preempt_mid_handoff[kv_consumer-False]",
        "victim",
        "handoff.status == RequestStatus.PREEMPTED (:751)",
        "LAMPS preempts `decoder` (8 tokens to decode: the larger score), not the last "
        "admitted `handoff`",
        ASYNC,
        "test_preempting_a_request_with_its_last_token_in_flight",
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_resumable_request_handoff",
        "strategy",
        "new_step.scheduled_new_reqs[0].num_computed_tokens == old_prompt_len (:803)",
        "at the pause LAMPS discards the session's KV (Swap chosen, no swap path), so the "
        "resume recomputes the 10-token context: 0 computed tokens, not 10",
        ASYNC,
        "test_resume_with_stale_steps_in_flight_ignores_them",
    ),
]
