"""vLLM scheduler tests that LAMPS fails on purpose: strict expected failures of the conformance
run (scripts/conformance), for each tested vLLM version (0.32.0, 0.33.0, 0.34.0).

Each entry names the vLLM test (node id; without `[params]` it covers every parametrization),
the assertion that fails, why LAMPS legitimately differs, the LAMPS classes it applies to (both
when empty), the order-agnostic version of the same scenario (a test in
python_tests/test_conformance_scenarios.py, or `file.py::test` in another test file) and, per
vLLM version it is expected on, the line(s) of that assertion in the version's test file. A
version missing from `lines` does not expect it (the test is new, or passes there). An entry
whose test passes fails the run (strict xfail), so does one that fails at another line than
listed, and so does an entry that matches no collected test: keep the list exact.

Kinds: ordering (LAMPS admits the smallest memory-over-time score first, ties by arrival time,
not FCFS), victim (LAMPS preempts the running request with the largest score, not the last
admitted), priority (LAMPS replaces --scheduling-policy priority by its own order), strategy (a
paused session's KV may be discarded or swapped instead of preserved), construction (the test
bypasses `__init__`, so LAMPS' own state does not exist), cache-aware (LAMPS turns vLLM 0.34's
cache-aware admission off: it orders `waiting` by its own score, see lamps/mechanism/compat.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SYNC = ("LampsSyncScheduler",)
ASYNC = ("LampsScheduler",)
CORE = "tests/v1/core/test_scheduler.py::"
ASYNC_CORE = "tests/v1/core/test_async_scheduler.py::"
STREAMING = "tests/v1/streaming_input/test_scheduler_streaming.py::TestStreamingScheduler::"
STREAMING_MODULE = "tests/v1/streaming_input/test_scheduler_streaming.py::"
V32, V33, V34 = (0, 32), (0, 33), (0, 34)
NEWER_SCENARIOS = "test_conformance_scenarios_newer.py::"

_CACHE_AWARE = (
    "LAMPS ranks the two equal 48-token prompts by arrival time, and `warm` was created before "
    "`cold` though queued after it: `warm` is admitted first, with or without the window"
)
_PRIORITY = (
    "LAMPS replaces --scheduling-policy priority by its own order (with a warning) and "
    "ignores Request.priority"
)


@dataclass(frozen=True)
class ExpectedFailure:
    """One vLLM test LAMPS fails on purpose, and where, on each vLLM version."""

    test: str  # vLLM node id; without [params]: every parametrization
    kind: str  # ordering | victim | priority | strategy | construction | cache-aware
    assertion: str  # the vLLM assertion that fails
    reason: str  # why LAMPS legitimately differs
    classes: tuple[str, ...]  # LAMPS classes it applies to; () = both
    scenario: str  # order-agnostic test: a name in test_conformance_scenarios.py, or file::name
    lines: Mapping[tuple[int, int], tuple[int, ...]]  # vLLM (major, minor) -> assertion lines


EXPECTED_FAILURES: list[ExpectedFailure] = [
    ExpectedFailure(
        CORE + "test_schedule_order",
        "ordering",
        "len(scheduler_output1.scheduled_new_reqs) == 2 (chunked) / == 1",
        "LAMPS admits the two 10-token prompts before the 800-token ones, so the first step "
        "admits 3 requests; the test asserts FCFS, where a short prompt never passes a long one",
        SYNC,
        "test_mixed_lengths_first_step_respects_limits_and_all_finish",
        {V32: (1440, 1445), V33: (2159, 2164), V34: (2551, 2556)},
    ),
    ExpectedFailure(
        CORE + "test_kv_cache_release_after_keep_pause_preserves_requests",
        "ordering",
        "list(scheduler.waiting) == [running, waiting]",
        "releasing the KV cache preempts the running request back to `waiting`, where LAMPS "
        "ranks it by score: it owes its prompt and one output token of recompute, the other "
        "request only its prompt, so the other is first; the test asserts FCFS positions",
        SYNC,
        "test_reset_prefix_cache_moves_every_running_request_back",
        {V32: (1802,), V33: (2523,), V34: (2908,)},
    ),
    ExpectedFailure(
        CORE + "test_preempt_during_execution",
        "victim",
        "scheduler.running[0] == requests[0]; requests[1] should be PREEMPTED",
        "out of blocks, LAMPS preempts the largest score, request 0 (81 tokens held), "
        "not the last admitted request 1 (80 tokens, its step in flight)",
        SYNC,
        "test_preemption_with_another_step_in_flight_keeps_its_token",
        {V32: (1488,), V33: (2207,), V34: (2598,)},
    ),
    ExpectedFailure(
        CORE + "test_scheduler_reset_prefix_cache",
        "ordering",
        "scheduler.waiting[i] == request: TypeError, not subscriptable",
        "the test indexes vLLM's FCFS deque; LAMPS' waiting queue is ranked by score and, like "
        "vLLM's own PriorityRequestQueue, has no positions (indexing is not RequestQueue API)",
        SYNC,
        "test_reset_prefix_cache_moves_every_running_request_back",
        {V32: (1754,), V33: (2475,), V34: (2861,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_basic_ordering",
        "priority",
        "scheduled_req_ids == ['1', '2', '0']",
        _PRIORITY + ": equal 10-token prompts tie on score and run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (3651,), V33: (4412,), V34: (4780,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_mixed_priority_and_arrival",
        "priority",
        "scheduled_req_ids == ['3', '2', '1', '0']",
        _PRIORITY + ": equal prompts run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (3709,), V33: (4470,), V34: (4838,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption",
        "priority",
        "lo1_req.status == RequestStatus.PREEMPTED",
        _PRIORITY + ": the victim is the largest score, hi1 (15 tokens left to decode), "
        "not the lowest priority lo1 (14 left)",
        SYNC,
        "test_priority_preemption_under_kv_pressure_keeps_one_running",
        {V32: (3803,), V33: (4564,), V34: (4930,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption_victim_selection",
        "priority",
        "output.scheduled_new_reqs[0].req_id == '2'",
        _PRIORITY + ": with one seat the first arrival (equal prompts) is admitted",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (3890,), V33: (4651,), V34: (5014,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_waiting_queue_order",
        "priority",
        "output.scheduled_new_reqs[0].req_id == '3'",
        _PRIORITY + ": with one seat the first arrival (equal prompts) is admitted",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (3967,), V33: (4728,), V34: (5091,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_with_limited_slots",
        "priority",
        "'3' in scheduled_req_ids",
        _PRIORITY + ": the two seats go to the first two arrivals (equal prompts)",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (4037,), V33: (4798,), V34: (5161,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_heap_property",
        "priority",
        "scheduled_priorities == sorted(priorities)",
        _PRIORITY + ": one seat, equal prompts, so requests run in arrival order",
        SYNC,
        "test_priority_policy_is_overridden_and_every_request_runs",
        {V32: (4099,), V33: (4860,), V34: (5222,)},
    ),
    ExpectedFailure(
        CORE + "test_priority_scheduling_preemption_and_resumption_when_out_of_kv",
        "priority",
        "scheduled_cached_reqs.req_ids[0] == request_high.request_id",
        _PRIORITY + ": out of blocks the victim is the largest score, the high-priority "
        "request (33 tokens, 15 left), so the low-priority one keeps running",
        SYNC,
        "test_preempted_request_resumes_with_prompt_and_decoded_tokens",
        {V32: (4360,), V33: (5128,), V34: (5486,)},
    ),
    ExpectedFailure(
        CORE + "test_abort_request_when_structured_output_fsm_cannot_advance",
        "construction",
        "update_from_output raises AttributeError: no attribute '_table'",
        "the test builds the scheduler with object.__new__ and sets vLLM's attributes by hand, "
        "so LAMPS' request table (made in __init__) does not exist",
        SYNC,
        "test_grammar_rejecting_a_token_finishes_only_that_request_with_an_error",
        {V32: (4254,), V33: (5022,), V34: (5384,)},
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_abort_request_when_structured_output_fsm_cannot_advance",
        "construction",
        "update_from_output raises AttributeError: no attribute '_table'",
        "the test builds the scheduler with object.__new__ and sets vLLM's attributes by hand, "
        "so LAMPS' request table (made in __init__) does not exist",
        ASYNC,
        "test_grammar_rejecting_a_token_finishes_only_that_request_with_an_error",
        {V32: (355,), V33: (356,), V34: (354,)},
    ),
    ExpectedFailure(
        CORE + "test_fcfs_mixed_blocked_types_remote_load_drains_first",
        "ordering",
        "list(scheduler.waiting) == [req_grammar, req_stream, req_tail]",
        "LAMPS admits the 1-token `tail` ahead of the 20-token `regular`, so `tail` is no "
        "longer waiting (and its queue lists the paused session after schedulable requests)",
        SYNC,
        "test_blocked_waiting_requests_of_every_kind_all_drain",
        {V32: (5622,), V33: (6391,), V34: (6724,)},
    ),
    ExpectedFailure(
        CORE + "test_async_load_reservation_prevents_wedge_e2e",
        "ordering",
        "a.status == RequestStatus.WAITING_FOR_REMOTE_KVS",
        "LAMPS admits the smaller request B's load first, so the reservation holds back A, "
        "the first arrival, instead of B",
        SYNC,
        "test_async_kv_loads_never_wedge_and_both_finish",
        {V32: (6952,), V33: (7896,), V34: (8221,)},
    ),
    ExpectedFailure(
        STREAMING + "test_streaming_e2e_lifecycle",
        "strategy",
        "session in scheduler.kv_holding_waiting",
        "at the pause LAMPS discards the session's KV (it picks Swap for the default 1 s API "
        "prediction; with no swap path that is Discard), so it waits in `waiting`; the test "
        "assumes vLLM's only strategy, Preserve",
        SYNC,
        "test_session_lifecycle_keeps_context_whatever_the_strategy",
        {V32: (602,), V33: (624,), V34: (619,)},
    ),
    ExpectedFailure(
        CORE + "test_pause_new_ignores_streaming_session_waiting_for_input",
        "strategy",
        "session in scheduler.kv_holding_waiting",
        "at the pause LAMPS discards the session's KV (it picks Swap for the default 1 s API "
        "prediction; with no swap path that is Discard), so it waits in `waiting`; the test "
        "assumes vLLM's only strategy, Preserve. What it checks next (0 unfinished requests "
        "under PAUSED_NEW) holds for every strategy in the scenario",
        SYNC,
        "test_paused_session_is_not_unfinished_under_paused_new",
        {V32: (2699,), V33: (3460,), V34: (3837,)},
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_kv_pressure_preempt_mid_handoff[kv_producer-False]",
        "victim",
        "handoff.status == RequestStatus.PREEMPTED",
        "LAMPS preempts `decoder` (8 tokens to decode: the larger score), not the last "
        "admitted `handoff`",
        ASYNC,
        "test_preempting_a_request_with_its_last_token_in_flight",
        {V32: (751,), V33: (752,), V34: (748,)},
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_kv_pressure_preempt_mid_handoff[kv_consumer-False]",
        "victim",
        "handoff.status == RequestStatus.PREEMPTED",
        "LAMPS preempts `decoder` (8 tokens to decode: the larger score), not the last "
        "admitted `handoff`",
        ASYNC,
        "test_preempting_a_request_with_its_last_token_in_flight",
        {V32: (751,), V33: (752,), V34: (748,)},
    ),
    ExpectedFailure(
        ASYNC_CORE + "test_resumable_request_handoff",
        "strategy",
        "new_step.scheduled_new_reqs[0].num_computed_tokens == old_prompt_len",
        "at the pause LAMPS discards the session's KV (Swap chosen, no swap path), so the "
        "resume recomputes the 10-token context: 0 computed tokens, not 10",
        ASYNC,
        "test_resume_with_stale_steps_in_flight_ignores_them",
        {V32: (803,), V33: (804,), V34: (797,)},
    ),
    ExpectedFailure(
        STREAMING_MODULE + "test_next_chunk_fully_computed_after_stop_on_accepted_draft[False]",
        "strategy",
        'output.num_scheduled_tokens["session"] == 2',
        "at the pause LAMPS discards the session's KV (Swap chosen, no swap path), so the next "
        "chunk recomputes the whole 6-token context, not the 2 new tokens; nothing lands on the "
        "trimmed drafts' positions either way",
        SYNC,
        NEWER_SCENARIOS + "test_next_chunk_after_a_stop_on_accepted_drafts_is_computed_in_full",
        {V33: (738,), V34: (731,)},
    ),
    ExpectedFailure(
        STREAMING_MODULE + "test_next_chunk_fully_computed_after_stop_on_accepted_draft[True]",
        "strategy",
        'output.num_scheduled_tokens["session"] == 2',
        "at the pause LAMPS discards the session's KV (Swap chosen, no swap path), so the next "
        "chunk recomputes the whole 6-token context, not the 2 new tokens; nothing lands on the "
        "trimmed drafts' positions either way",
        ASYNC,
        NEWER_SCENARIOS + "test_next_chunk_after_a_stop_on_accepted_drafts_is_computed_in_full",
        {V33: (738,), V34: (731,)},
    ),
    ExpectedFailure(
        CORE + "test_cache_aware_admission_protects_resident_prefix_from_eviction[0]",
        "ordering",
        'scheduled[0] == "cold" (the control, window 0)',
        _CACHE_AWARE,
        SYNC,
        NEWER_SCENARIOS + "test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit",
        {V34: (1490,)},
    ),
    ExpectedFailure(
        CORE + "test_cache_aware_admission_keeps_blocked_and_started_requests_in_place",
        "ordering",
        'before == ["cold", "blocked", "started", "warm", "tail"]',
        "the test reads `waiting` by position before reordering it; LAMPS' waiting queue is "
        "ranked (`warm` first: equal prompts, the earliest arrival) and has no positions",
        SYNC,
        NEWER_SCENARIOS + "test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit",
        {V34: (1516,)},
    ),
    ExpectedFailure(
        CORE + "test_cache_aware_admission_does_not_look_past_the_window",
        "ordering",
        'scheduled_new_reqs == ["cold", "warm"]',
        _CACHE_AWARE,
        SYNC,
        NEWER_SCENARIOS + "test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit",
        {V34: (1536,)},
    ),
    ExpectedFailure(
        CORE + "test_cache_aware_admission_skipped_below_threshold",
        "ordering",
        'scheduled_new_reqs == ["cold", "warm"]',
        _CACHE_AWARE,
        SYNC,
        NEWER_SCENARIOS + "test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit",
        {V34: (1551,)},
    ),
    ExpectedFailure(
        CORE + "test_cache_aware_admission_is_safe_on_a_mamba_spec",
        "cache-aware",
        "scheduler.cache_aware_window == 4",
        "LAMPS turns the window off at construction (a warning says so): it orders `waiting` by "
        "its own score, as vLLM turns it off for its priority policy",
        SYNC,
        NEWER_SCENARIOS + "test_cache_aware_admission_asked_for_keeps_every_request_and_its_hit",
        {V34: (1574,)},
    ),
]
