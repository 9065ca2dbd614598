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


EXPECTED_FAILURES: list[ExpectedFailure] = []
