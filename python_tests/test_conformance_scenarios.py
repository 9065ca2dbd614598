"""Order-agnostic versions of the vLLM scheduler tests LAMPS fails on purpose.

Each vLLM test in python_tests/conformance/expected_failures.py asserts something about order
(FCFS admission, the last-admitted victim, priority order) or about the default Preserve
strategy, which LAMPS legitimately changes. Here the same steps drive the LAMPS classes and
check only what must hold whatever the policy: no request is lost or finished twice, every
request gets exactly its tokens, the block pool's free count returns to its start once all
finish or abort, and the counters agree (`get_request_counts`, `get_num_unfinished_requests`,
`len(scheduler.requests)`, and LAMPS' side table `lamps_num_tracked`). Most scenarios also run
with ranking off (vLLM's FCFS order with LAMPS' strategies), so that they hold for both orders.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from vllm.config import KVTransferConfig
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
)
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.engine import FinishReason
from vllm.v1.outputs import KVConnectorOutput
from vllm.v1.request import Request, RequestStatus

from lamps._core import Strategy
from lamps.harness import make_request, model_runner_output, run_step
from lamps.vllm import LampsScheduler, LampsSyncScheduler

LAMPS_CLASSES = [LampsSyncScheduler, LampsScheduler]
CLASS_IDS = ["sync", "async"]
# Ranking on (LAMPS' score order) and off (FCFS order, LAMPS strategies still applied).
ORDERS = pytest.mark.parametrize("ranking", [True, False], ids=["lamps-order", "fcfs-order"])
BOTH_CLASSES = pytest.mark.parametrize("cls", LAMPS_CLASSES, ids=CLASS_IDS)
# Turn lengths/pauses as hints: Preserve (the call returns at once), Discard (it never does).
PRESERVE_HINTS = {"tool": "t", "predicted_api_seconds": 0.0}
DISCARD_HINTS = {"tool": "t", "predicted_api_seconds": 1e6}


def build(
    make: Callable[..., Any],
    cls: type,
    *,
    ranking: bool = True,
    lamps: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A LAMPS scheduler; the async class runs with async scheduling, as vLLM builds it."""
    kwargs.setdefault("async_scheduling", issubclass(cls, AsyncScheduler))
    cfg = {"log_interval_s": 0.0, "ranking": ranking, **(lamps or {})}
    return make(cls, additional_config={"lamps": cfg}, **kwargs)


def free_blocks(sched: Any) -> int:
    return sched.kv_cache_manager.block_pool.get_num_free_blocks()


class Ledger:
    """Follows one scheduler through a scenario and checks the policy-free invariants."""

    def __init__(self, sched: Any) -> None:
        self.sched = sched
        self.free_at_start = free_blocks(sched)
        self.requests: dict[str, Request] = {}
        self.finished: collections.Counter[str] = collections.Counter()
        self.delivered: dict[str, list[int]] = collections.defaultdict(list)
        self.finish_reasons: dict[str, Any] = {}
        self.scheduled: set[str] = set()  # ids that were ever given tokens
        self._sampling: dict[int, list[str]] = {}  # per schedule(): who samples at its end

    # ----- driving ---------------------------------------------------------------------------

    def add(self, *requests: Request) -> None:
        for request in requests:
            self.sched.add_request(request)
            self.requests.setdefault(request.request_id, request)
        self.check()

    def record(self, engine_outputs: dict[int, Any]) -> None:
        for eco in engine_outputs.values():
            for o in eco.outputs:
                self.delivered[o.request_id] += list(o.new_token_ids)
                if o.finish_reason is not None:
                    self.finish_reasons[o.request_id] = o.finish_reason
                    # A session's turn ends with a finish reason too; only a request that
                    # left the scheduler counts as finished.
                    if o.request_id not in self.sched.requests:
                        self.finished[o.request_id] += 1

    def step(self, token_id: int = 7) -> Any:
        out, engine_outputs = run_step(self.sched, token_id)
        self.scheduled |= set(out.num_scheduled_tokens)
        self.record(engine_outputs)
        self.check()
        return out

    def schedule(self) -> Any:
        """schedule() alone: its output is delivered later with `update` (in flight)."""
        out = self.sched.schedule()
        self.scheduled |= set(out.num_scheduled_tokens)
        # A request samples once this step's tokens complete its prefill (as run_step).
        self._sampling[id(out)] = [
            r
            for r in out.num_scheduled_tokens
            if r in self.sched.requests and not self.sched.requests[r].is_prefill_chunk
        ]
        self.check()
        return out

    def update(
        self, out: Any, sampling: Iterable[str] | None = None, token_id: int = 7, **kv: Any
    ) -> None:
        """Deliver the model output of an earlier `schedule()` (in-flight steps)."""
        if sampling is None:
            sampling = self._sampling.pop(id(out))
        mro = model_runner_output(out, sampling, token_id)
        if kv:
            mro = dataclasses.replace(mro, kv_connector_output=KVConnectorOutput(**kv))
        self.record(self.sched.update_from_output(out, mro))
        self.check()

    def drain(self, max_steps: int = 400, token_id: int = 7) -> None:
        for _ in range(max_steps):
            if not self.sched.has_unfinished_requests():
                return
            self.step(token_id)
        raise AssertionError(f"not drained after {max_steps} steps: {self.where()}")

    # ----- checks ----------------------------------------------------------------------------

    def where(self) -> dict[str, list[str]]:
        s = self.sched
        return {
            "running": [r.request_id for r in s.running],
            "waiting": [r.request_id for r in s.waiting],
            "kv_holding_waiting": [r.request_id for r in s.kv_holding_waiting],
        }

    def check(self) -> None:
        """Counters and queues agree; every live request sits in exactly one place."""
        s = self.sched
        places = self.where()
        ids = [i for queue in places.values() for i in queue]
        assert len(ids) == len(set(ids)), f"a request is queued twice: {places}"
        assert set(ids) == set(s.requests), (
            f"queues {places} disagree with scheduler.requests {sorted(s.requests)}"
        )
        num_running, num_waiting = s.get_request_counts()
        assert num_running == len(places["running"])
        assert num_waiting == len(places["waiting"]) + len(places["kv_holding_waiting"])
        paused = sum(
            r.status == RequestStatus.WAITING_FOR_STREAMING_REQ for r in s.requests.values()
        )
        assert s.num_waiting_for_streaming_input == paused
        unfinished = s.get_num_unfinished_requests()
        if s._pause_state == PauseState.UNPAUSED:
            assert unfinished == num_running + num_waiting - paused
        assert unfinished >= 0
        assert s.lamps_num_tracked == len(s.requests)
        assert free_blocks(s) <= self.free_at_start

    def check_finished(self, outputs: dict[str, int] | None = None) -> None:
        """Everything finished exactly once, with its tokens; nothing left; no block leaked.

        `outputs`: request id -> output tokens of its last turn (default: its max_tokens).
        """
        s = self.sched
        assert not s.requests, f"left in the scheduler: {self.where()}"
        assert not s.has_unfinished_requests()
        assert s.get_num_unfinished_requests() == 0
        assert s.get_request_counts() == (0, 0)
        assert s.lamps_num_tracked == 0
        assert free_blocks(s) == self.free_at_start, "blocks leaked"
        for rid, request in self.requests.items():
            assert self.finished[rid] == 1, f"{rid} finished {self.finished[rid]} times"
            want = (outputs or {}).get(rid, request.max_tokens)
            if request.status != RequestStatus.FINISHED_ABORTED and want is not None:
                assert request.num_output_tokens == want, rid
        for rid, tokens in self.delivered.items():
            if rid in self.requests and not self.requests[rid].resumable:
                # Delivered output is exactly the request's output, nothing twice.
                assert tokens == list(self.requests[rid].output_token_ids), rid


def prompt(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


# ----- self-check: the invariants can fail -----------------------------------------------------


def test_ledger_detects_a_leaked_block_and_a_lost_request(make_vllm_scheduler: Any) -> None:
    sched = build(make_vllm_scheduler, LampsSyncScheduler)
    ledger = Ledger(sched)
    ledger.add(make_request("a", prompt(20), max_tokens=2))
    ledger.drain()
    ledger.check_finished()
    # A block taken behind the scheduler's back is a leak.
    sched.kv_cache_manager.block_pool.get_new_blocks(1)
    with pytest.raises(AssertionError, match="blocks leaked"):
        ledger.check_finished()
    # A request dropped from the queues without being freed is lost.
    sched2 = build(make_vllm_scheduler, LampsSyncScheduler)
    ledger2 = Ledger(sched2)
    ledger2.add(make_request("b", prompt(20), max_tokens=2))
    sched2.waiting.remove_request(sched2.requests["b"])
    with pytest.raises(AssertionError, match="disagree"):
        ledger2.check()


# ----- test_schedule_order ----------------------------------------------------------------------


@BOTH_CLASSES
@ORDERS
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "unchunked"])
def test_mixed_lengths_first_step_respects_limits_and_all_finish(
    make_vllm_scheduler: Any, cls: type, ranking: bool, chunked: bool
) -> None:
    """vLLM's test_schedule_order: 2 long + 2 short prompts, 3 seqs, 1024-token budget."""
    sched = build(
        make_vllm_scheduler,
        cls,
        ranking=ranking,
        max_num_seqs=3,
        max_num_batched_tokens=1024,
        max_model_len=1024,
        enable_chunked_prefill=chunked,
    )
    ledger = Ledger(sched)
    reqs = [
        make_request("1", prompt(800)),
        make_request("2", prompt(800, 1000)),
        make_request("3", prompt(10, 2000)),
        make_request("4", prompt(10, 3000)),
    ]
    ledger.add(*reqs)
    out = ledger.step()
    scheduled = out.num_scheduled_tokens
    assert 1 <= len(out.scheduled_new_reqs) <= 3
    assert sum(scheduled.values()) <= 1024
    if not chunked:
        # Without chunked prefill a prompt is scheduled whole or not at all.
        assert all(n == len(sched.requests[r].prompt_token_ids) for r, n in scheduled.items())
    ledger.drain()
    ledger.check_finished()


# ----- test_preempt_during_execution ------------------------------------------------------------


@ORDERS
@pytest.mark.parametrize("b_tokens", [16, 1], ids=["b-decodes", "b-ends-in-flight"])
def test_preemption_with_another_step_in_flight_keeps_its_token(
    make_vllm_scheduler: Any, ranking: bool, b_tokens: int
) -> None:
    """vLLM's test_preempt_during_execution (sync scheduler, two batches in flight as with
    pipeline parallelism): 10 usable blocks, two 80-token prompts, the second one's step
    still in flight when the cache runs out. Whichever is the victim, the in-flight token is
    delivered to its request once and both finish with all their tokens (also when that
    token is the second request's last one)."""
    sched = build(
        make_vllm_scheduler,
        LampsSyncScheduler,
        ranking=ranking,
        num_blocks=11,
        max_num_batched_tokens=100,
        enable_prefix_caching=False,
    )
    ledger = Ledger(sched)
    a, b = make_request("0", prompt(80)), make_request("1", prompt(80, 100), max_tokens=b_tokens)
    ledger.add(a)
    out0 = ledger.schedule()
    ledger.add(b)
    out1 = ledger.schedule()
    assert list(out1.num_scheduled_tokens) == ["1"]
    ledger.update(out0)
    out2 = ledger.schedule()
    preempted = [r for r in (a, b) if r.status == RequestStatus.PREEMPTED]
    assert len(preempted) == 1
    assert len(sched.running) == 1
    ledger.update(out1, token_id=42)  # b's in-flight token
    assert list(b.output_token_ids)[:1] == [42]
    ledger.update(out2)
    ledger.drain()
    ledger.check_finished()


# ----- test_scheduler_reset_prefix_cache --------------------------------------------------------


def _aux_output_connector(sched: Any) -> Any:
    """As vLLM's test sets it: a bare Mock in 0.32; in 0.33, whose scheduler reads cache-hit
    limits from it, a Mock wrapping the real connector (built with the KV cache manager)."""
    from vllm.distributed.aux_output_connector.connector import AuxOutputSchedulerConnector

    try:
        return Mock(wraps=AuxOutputSchedulerConnector(sched.kv_cache_manager))  # type: ignore[call-arg]
    except TypeError:  # 0.32: no arguments
        return Mock()


@BOTH_CLASSES
@ORDERS
def test_reset_prefix_cache_moves_every_running_request_back(
    make_vllm_scheduler: Any, cls: type, ranking: bool
) -> None:
    """vLLM's test_scheduler_reset_prefix_cache, with `waiting` compared as a set (a ranked
    queue has no positions, like vLLM's own priority queue)."""
    sched = build(make_vllm_scheduler, cls, ranking=ranking)
    sched.aux_output_connector = _aux_output_connector(sched)
    ledger = Ledger(sched)
    reqs = [make_request(str(i), [i] * 10) for i in range(10)]
    ledger.add(*reqs)
    sched.schedule()
    ledger.check()
    assert len(sched.waiting) == 0
    assert {r.request_id for r in sched.running} == {r.request_id for r in reqs}
    assert not sched.reset_prefix_cache()
    for r in reqs:  # a pause completes pending model outputs before the reset
        r.num_in_flight_tokens = 0
    assert sched.reset_prefix_cache(reset_running_requests=True)
    ledger.check()
    assert len(sched.running) == 0
    assert {r.request_id for r in sched.waiting} == {r.request_id for r in reqs}
    assert all(r.num_computed_tokens == 0 for r in reqs)
    # No model runner answers the connector's requests in the drain below (0.33's asserts it).
    sched.aux_output_connector = None
    ledger.drain()
    ledger.check_finished()


# ----- test_abort_request_when_structured_output_fsm_cannot_advance (both files) ----------------


@BOTH_CLASSES
@pytest.mark.parametrize("resumable", [False, True], ids=["request", "session"])
def test_grammar_rejecting_a_token_finishes_only_that_request_with_an_error(
    make_vllm_scheduler: Any, cls: type, resumable: bool
) -> None:
    """vLLM's FSM-cannot-advance tests build the scheduler with object.__new__ and set only
    vLLM's attributes; here a fully built LAMPS scheduler takes the same path."""
    sched = build(make_vllm_scheduler, cls)
    ledger = Ledger(sched)
    bad = make_request("bad", prompt(20), max_tokens=4, resumable=resumable)
    good = make_request("good", prompt(20, 100), max_tokens=4)
    ledger.add(bad, good)
    accept = sched.structured_output_manager.accept_tokens = Mock(
        side_effect=lambda request, tokens: request.request_id != "bad"
    )
    ledger.step()
    accept.assert_any_call(bad, [7])
    assert bad.status == RequestStatus.FINISHED_ERROR
    assert bad.resumable is False
    assert ledger.finish_reasons["bad"] == FinishReason.ERROR
    assert "bad" not in sched.requests
    assert sched.lamps_state("bad") is None
    ledger.drain()
    ledger.check_finished(outputs={"bad": 1})


# ----- priority tests ---------------------------------------------------------------------------

# vLLM test -> (priorities, arrival times, max_num_seqs, max_num_batched_tokens)
PRIORITY_SHAPES = {
    "basic_ordering": ([2, 0, 1], [1.0, 2.0, 3.0], 16, 8192),
    "mixed_priority_and_arrival": ([2, 1, 1, 0], [1.0, 3.0, 2.0, 4.0], 16, 8192),
    "preemption_victim_selection": ([3, 2, 0], [1.0, 2.0, 3.0], 1, 8192),
    "waiting_queue_order": ([3, 1, 2, 0], [1.0, 2.0, 3.0, 4.0], 1, 8192),
    "with_limited_slots": ([3, 1, 2, 0], [1.0, 2.0, 3.0, 4.0], 2, 1000),
    "heap_property": ([5, 1, 8, 3, 2, 7, 4, 6], [float(i) for i in range(8)], 1, 8192),
}


def priority_request(
    rid: str, priority: int, arrival: float, n: int = 10, start: int = 0, max_tokens: int = 16
) -> Request:
    request = make_request(rid, [start] * n, max_tokens=max_tokens, arrival_time=arrival)
    request.priority = priority
    return request


@BOTH_CLASSES
@pytest.mark.parametrize("shape", list(PRIORITY_SHAPES))
def test_priority_policy_is_overridden_and_every_request_runs(
    make_vllm_scheduler: Any, cls: type, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """vLLM's priority-order tests: LAMPS replaces --scheduling-policy priority by its own
    order (with a warning); what remains is that the first step fills the free seats, the
    rest waits, and every request runs to its end exactly once."""
    priorities, arrivals, max_seqs, budget = PRIORITY_SHAPES[shape]
    caplog.set_level(logging.WARNING, logger="vllm.lamps")
    sched = build(
        make_vllm_scheduler,
        cls,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
        policy="priority",
    )
    assert sched.policy == SchedulingPolicy.FCFS
    assert any("scheduling-policy" in r.getMessage() for r in caplog.records)
    ledger = Ledger(sched)
    reqs = [
        priority_request(str(i), p, t, start=i)
        for i, (p, t) in enumerate(zip(priorities, arrivals, strict=True))
    ]
    ledger.add(*reqs)
    out = ledger.step()
    admitted = {r.req_id for r in out.scheduled_new_reqs}
    assert len(admitted) == min(max_seqs, len(reqs))
    assert {r.request_id for r in sched.waiting} == {r.request_id for r in reqs} - admitted
    ledger.drain()
    ledger.check_finished()


@BOTH_CLASSES
@ORDERS
def test_priority_preemption_under_kv_pressure_keeps_one_running(
    make_vllm_scheduler: Any, cls: type, ranking: bool
) -> None:
    """vLLM's test_priority_scheduling_preemption: 5 usable blocks; lo1 (priority 5) runs,
    hi1 (priority 0) joins and the cache runs out. Exactly one of them is preempted (LAMPS:
    the larger score, whatever the priority); both finish with all their tokens."""
    sched = build(
        make_vllm_scheduler,
        cls,
        ranking=ranking,
        max_num_seqs=3,
        max_num_batched_tokens=200,
        num_blocks=6,
        policy="priority",
        enable_prefix_caching=False,
    )
    ledger = Ledger(sched)
    lo1 = priority_request("lo1", 5, 1.0, n=32)
    hi1 = priority_request("hi1", 0, 2.0, n=32, start=1)
    ledger.add(lo1)
    ledger.step()
    ledger.add(hi1)
    out = ledger.step()
    assert "hi1" in {r.req_id for r in out.scheduled_new_reqs}
    assert len(sched.running) == 2
    out = ledger.step()
    assert len(out.preempted_req_ids) == 1
    victim = sched.requests[next(iter(out.preempted_req_ids))]
    assert victim.status == RequestStatus.PREEMPTED
    assert len(sched.running) == 1
    ledger.drain()
    ledger.check_finished()


@BOTH_CLASSES
@ORDERS
def test_preempted_request_resumes_with_prompt_and_decoded_tokens(
    make_vllm_scheduler: Any, cls: type, ranking: bool
) -> None:
    """vLLM's test_priority_scheduling_preemption_and_resumption_when_out_of_kv: 4 usable
    blocks, two requests, one preempted; when the other finishes, the victim resumes with its
    prompt and every token it had decoded, recomputed from scratch."""
    sched = build(
        make_vllm_scheduler,
        cls,
        ranking=ranking,
        max_num_seqs=2,
        max_num_batched_tokens=200,
        num_blocks=5,
        policy="priority",
        enable_prefix_caching=False,
    )
    ledger = Ledger(sched)
    low = priority_request("0", 1, 0.0, n=30)
    high = priority_request("1", 0, 1.0, n=32, start=1)
    ledger.add(low)
    ledger.step(100)
    ledger.add(high)
    ledger.step(100)
    assert free_blocks(sched) == 0
    out = ledger.step(100)
    assert len(out.preempted_req_ids) == 1
    victim = sched.requests[next(iter(out.preempted_req_ids))]
    survivor = high if victim is low else low
    tokens_before = list(victim.all_token_ids)
    assert victim.num_computed_tokens == 0
    sched.finish_requests(survivor.request_id, RequestStatus.FINISHED_ABORTED)
    ledger.finished[survivor.request_id] += 1
    out = ledger.step(100)
    assert out.num_scheduled_tokens == {victim.request_id: len(tokens_before)}
    resumed = {r.req_id: r for r in out.scheduled_new_reqs}
    if victim.request_id in resumed:  # the V2 model runner gets resumed requests as new ones
        # 0.33 hands out the request's own token list, which this step's output has extended.
        got = list(resumed[victim.request_id].prefill_token_ids)
        assert got[: len(tokens_before)] == tokens_before
        assert len(got) - len(tokens_before) in (0, 1)
    else:
        cached = out.scheduled_cached_reqs
        assert victim.request_id in cached.resumed_req_ids
        assert list(cached.all_token_ids[victim.request_id]) == tokens_before
    ledger.drain()
    ledger.check_finished()


# ----- test_fcfs_mixed_blocked_types_remote_load_drains_first -----------------------------------


@BOTH_CLASSES
@ORDERS
def test_blocked_waiting_requests_of_every_kind_all_drain(
    make_vllm_scheduler: Any, cls: type, ranking: bool
) -> None:
    """vLLM's FCFS mixed-blocked-types test: a grammar-blocked request, a remote-KV load, a
    paused streaming session, a regular and a tail request. Once each blocker clears (the
    session resumed the way the engine resumes it, with its next input), every request is
    scheduled and finishes; nothing is lost while blocked."""
    sched = build(make_vllm_scheduler, cls, ranking=ranking, max_num_batched_tokens=20)
    sched._update_waiting_for_remote_kv = Mock()
    ledger = Ledger(sched)
    stream = make_request(
        "stream", [5], max_tokens=1, resumable=True, extra_args={"lamps": DISCARD_HINTS}
    )
    ledger.add(stream)
    ledger.drain(20)
    assert stream.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    grammar, remote = make_request("grammar", [1], max_tokens=2), make_request("remote", [2])
    regular, tail = make_request("regular", prompt(20, 100)), make_request("tail", [4])
    grammar.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    grammar.structured_output_request = Mock(grammar=None)
    remote.status = RequestStatus.WAITING_FOR_REMOTE_KVS
    sched.structured_output_manager.accept_tokens = Mock(return_value=True)
    ledger.add(grammar, remote, regular, tail)
    ledger.step()
    assert grammar.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    assert remote.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert remote in list(sched.kv_holding_waiting)
    sched.finish_requests("regular", RequestStatus.FINISHED_ABORTED)
    ledger.finished["regular"] += 1
    ledger.check()
    grammar.structured_output_request = Mock(grammar=object())
    sched.finished_recving_kv_req_ids.add("remote")
    ledger.scheduled.clear()
    ledger.add(make_request("stream", [6, 6], max_tokens=2, resumable=True))
    ledger.drain()
    sched._update_waiting_for_remote_kv.assert_called_once_with(remote)
    assert {"grammar", "remote", "stream"} <= ledger.scheduled
    assert "tail" in ledger.scheduled or ledger.finished["tail"] == 1
    sched.add_request(make_request("stream", [0], max_tokens=1, resumable=False))  # close it
    ledger.record({})
    ledger.finished["stream"] += 1
    ledger.check_finished(outputs={"stream": 2, "regular": None})


# ----- test_async_load_reservation_prevents_wedge_e2e -------------------------------------------


class _AsyncLoadMeta(KVConnectorMetadata):
    pass


class AsyncLoadConnector(KVConnectorBase_V1):
    """Scheduler-side stand-in for an asynchronous KV load: every new request finds
    `matched_tokens` of its prompt remotely, loaded in the background (vLLM's MockKVConnector
    in its scheduler tests does the same)."""

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> Any:
        matched = self._kv_transfer_config.kv_connector_extra_config["matched_tokens"]
        return max(min(matched, request.num_tokens - 1) - num_computed_tokens, 0), True

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external: int) -> None:
        pass

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        return _AsyncLoadMeta()

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        pass

    def wait_for_layer_load(self, layer_name: str) -> None:
        pass

    def save_kv_layer(
        self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any
    ) -> None:
        pass

    def wait_for_save(self) -> None:
        pass


@BOTH_CLASSES
@ORDERS
def test_async_kv_loads_never_wedge_and_both_finish(
    make_vllm_scheduler: Any, cls: type, ranking: bool
) -> None:
    """vLLM's test_async_load_reservation_prevents_wedge_e2e: A (8 blocks) and B (5 blocks)
    both load a 4-block prefix asynchronously in a 9-usable-block pool. Whichever LAMPS admits
    first, loads land one step after they start, and both finish: no wedge, no leak."""
    block = 16
    sched = build(
        make_vllm_scheduler,
        cls,
        ranking=ranking,
        num_blocks=10,
        max_num_seqs=4,
        max_num_batched_tokens=block * 16,
        enable_prefix_caching=False,
        kv_transfer_config=KVTransferConfig(
            kv_connector="AsyncLoadConnector",
            kv_role="kv_both",
            kv_connector_module_path=__name__,
            kv_connector_extra_config={"matched_tokens": block * 4},
        ),
    )
    ledger = Ledger(sched)
    a, b = (
        make_request("a", prompt(block * 8), max_tokens=4),
        make_request("b", prompt(block * 5, 1000), max_tokens=4),
    )
    ledger.add(a, b)
    loading: set[str] = set()
    for _ in range(100):
        if not sched.has_unfinished_requests():
            break
        out = ledger.schedule()
        landed = sorted(loading)
        loading = {
            r.request_id
            for r in sched.requests.values()
            if r.status == RequestStatus.WAITING_FOR_REMOTE_KVS
        } - set(landed)
        ledger.update(out, finished_recving=set(landed))
    ledger.check_finished()


# ----- test_kv_pressure_preempt_mid_handoff (async) ---------------------------------------------


@ORDERS
@pytest.mark.parametrize("kv_role", [None, "kv_producer", "kv_consumer"])
def test_preempting_a_request_with_its_last_token_in_flight(
    make_vllm_scheduler: Any, tmp_path: Path, ranking: bool, kv_role: str | None
) -> None:
    """vLLM's test_kv_pressure_preempt_mid_handoff: two 32-token prompts fill the 4 usable
    blocks, the next decode needs a block while both prefill tokens are in flight. Whichever
    request is preempted, its in-flight token is delivered (or dropped, on a KV producer, and
    recomputed): the decoder ends with 8 tokens, the hand-off request with 1, nothing leaks."""
    kv = None
    if kv_role is not None:
        kv = KVTransferConfig(
            kv_connector="ExampleConnector",
            kv_role=kv_role,
            kv_connector_extra_config={"shared_storage_path": str(tmp_path)},
        )
    sched = build(
        make_vllm_scheduler,
        LampsScheduler,
        ranking=ranking,
        num_blocks=5,
        max_num_batched_tokens=512,
        enable_prefix_caching=False,
        kv_transfer_config=kv,
    )
    ledger = Ledger(sched)
    decoder = make_request("decoder", prompt(32), max_tokens=8)
    handoff = make_request("handoff", prompt(32, 100), max_tokens=1)
    ledger.add(decoder, handoff)
    out1 = ledger.schedule()
    out2 = ledger.schedule()
    if getattr(sched, "defer_block_free", False):
        # vLLM 0.33, a consumer with overlapping batches: the victim's free waits for its
        # in-flight output, so the allocation retry stops instead of preempting.
        assert not out2.preempted_req_ids
    else:
        assert len(out2.preempted_req_ids) == 1
        victim = sched.requests[next(iter(out2.preempted_req_ids))]
        assert victim.status == RequestStatus.PREEMPTED
    ledger.update(out1)
    ledger.update(out2)
    ledger.drain()
    ledger.check_finished()


# ----- streaming sessions: test_streaming_e2e_lifecycle, test_resumable_request_handoff ----------

STRATEGIES = pytest.mark.parametrize(
    "hints", [PRESERVE_HINTS, DISCARD_HINTS], ids=["preserve", "discard"]
)


@BOTH_CLASSES
@STRATEGIES
def test_session_lifecycle_keeps_context_whatever_the_strategy(
    make_vllm_scheduler: Any, cls: type, hints: dict[str, Any]
) -> None:
    """vLLM's test_streaming_e2e_lifecycle: a session decodes, ends its turn and waits for
    input, then resumes with [4, 5]. Preserved or discarded, the resumed prompt is the old
    prompt, the computed output and the new input; the resume computes exactly what is not
    cached; the turn then produces its tokens."""
    sched = build(make_vllm_scheduler, cls, lamps={"allow_swap": False})
    ledger = Ledger(sched)
    session = make_request(
        "session", [1, 2, 3], max_tokens=2, resumable=True, extra_args={"lamps": hints}
    )
    ledger.add(session)
    first = ledger.step(10)
    assert first.scheduled_new_reqs[0].prompt_token_ids == [1, 2, 3]
    ledger.step(11)
    assert session.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    assert list(session.all_token_ids) == [1, 2, 3, 10, 11]
    expected = Strategy.PRESERVE if hints is PRESERVE_HINTS else Strategy.DISCARD
    assert sched.lamps_state("session").strategy == expected
    # Preserve holds the computed context's blocks through the pause; Discard frees them all.
    held = ledger.free_at_start - free_blocks(sched)
    assert held == (1 if expected == Strategy.PRESERVE else 0)
    ledger.add(make_request("session", [4, 5], max_tokens=2, resumable=True))
    assert session.status == RequestStatus.WAITING
    computed = session.num_computed_tokens
    out = ledger.step(12)
    assert list(session.prompt_token_ids) == [1, 2, 3, 10, 4, 5]
    assert out.num_scheduled_tokens == {"session": 6 - computed}
    assert [r.req_id for r in out.scheduled_new_reqs] == ["session"]
    assert list(out.scheduled_new_reqs[0].prompt_token_ids) == [1, 2, 3, 10, 4, 5]
    ledger.step(13)
    assert list(session.output_token_ids) == [12, 13]
    assert session.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    sched.add_request(make_request("session", [0], max_tokens=1, resumable=False))
    ledger.finished["session"] += 1
    ledger.check_finished(outputs={"session": 2})


@BOTH_CLASSES
@STRATEGIES
def test_paused_session_is_not_unfinished_under_paused_new(
    make_vllm_scheduler: Any, cls: type, hints: dict[str, Any]
) -> None:
    """vLLM's test_pause_new_ignores_streaming_session_waiting_for_input, whatever the
    strategy: a session idle between turns cannot progress, so a PAUSED_NEW drain must not
    wait for it (0 unfinished), nor count it below zero."""
    sched = build(make_vllm_scheduler, cls, lamps={"allow_swap": False})
    ledger = Ledger(sched)
    ledger.add(
        make_request("s", prompt(4), max_tokens=1, resumable=True, extra_args={"lamps": hints})
    )
    ledger.drain(10)
    assert sched.requests["s"].status == RequestStatus.WAITING_FOR_STREAMING_REQ
    sched.set_pause_state(PauseState.PAUSED_NEW)
    assert sched.get_num_unfinished_requests() == 0
    sched.set_pause_state(PauseState.UNPAUSED)
    sched.add_request(make_request("s", [0], max_tokens=1, resumable=False))
    ledger.finished["s"] += 1
    ledger.check_finished()


@STRATEGIES
def test_resume_with_stale_steps_in_flight_ignores_them(
    make_vllm_scheduler: Any, hints: dict[str, Any]
) -> None:
    """vLLM's test_resumable_request_handoff: three async steps in flight, the first ends
    the turn, the continuation arrives while two stale steps are still queued. Preserved or
    discarded, the resume starts from what is really computed, the stale outputs add nothing,
    and the next turn's token lands."""
    sched = build(make_vllm_scheduler, LampsScheduler, lamps={"allow_swap": False})
    ledger = Ledger(sched)
    session = make_request(
        "s", prompt(10), max_tokens=4, resumable=True, extra_args={"lamps": hints}
    )
    session.sampling_params.stop_token_ids = [99]  # the first sampled token ends the turn
    ledger.add(session)
    queue = [ledger.schedule() for _ in range(3)]

    def process_oldest(token_id: int = 7) -> None:
        ledger.update(queue.pop(0), token_id=token_id)

    process_oldest(99)
    assert session.status == RequestStatus.WAITING_FOR_STREAMING_REQ
    ledger.add(make_request("s", prompt(12, 100), max_tokens=4, resumable=True))
    new_step = ledger.schedule()
    queue.append(new_step)
    (new,) = new_step.scheduled_new_reqs
    assert new.num_computed_tokens + new_step.num_scheduled_tokens["s"] == 10 + 12
    assert new.num_computed_tokens in (10, 0)  # preserved: all 10; discarded: no cache
    before = list(session.all_token_ids)
    process_oldest()
    process_oldest()
    assert list(session.output_token_ids) == []
    assert list(session.all_token_ids) == before
    process_oldest()
    assert len(session.output_token_ids) == 1
    ledger.drain()
    sched.add_request(make_request("s", [0], max_tokens=1, resumable=False))
    ledger.finished["s"] += 1
    ledger.check_finished(outputs={"s": 4})


# ----- randomized: vLLM's test_priority_scheduling_blast without the multimodal model -------------


def random_workload(ledger: Ledger, rng: random.Random, steps: int, depth: int) -> None:
    """Arrivals (plain requests and sessions with API pauses), resumes, closes and aborts
    over `steps` engine steps with `depth` steps in flight, then everything drained."""
    sched = ledger.sched
    turns_left: dict[str, int] = {}
    in_flight: collections.deque[Any] = collections.deque()
    count = 0

    def end(rid: str) -> None:
        turns_left.pop(rid, None)
        ledger.finished[rid] += 1

    def tick(allow_new: bool) -> None:
        nonlocal count
        if allow_new and rng.random() < 0.35:
            rid = f"r{count}"
            count += 1
            resumable = rng.random() < 0.3
            ledger.add(
                make_request(
                    # Shared starts give prefix-cache hits (after discards too).
                    rid,
                    prompt(rng.randint(1, 120), rng.choice([0, 0, 5000, rng.randint(0, 10_000)])),
                    max_tokens=rng.randint(1, 24),
                    resumable=resumable,
                    extra_args={"lamps": rng.choice([PRESERVE_HINTS, DISCARD_HINTS])},
                )
            )
            if resumable:
                turns_left[rid] = rng.randint(0, 2)
        for rid in list(turns_left):
            req = sched.requests.get(rid)
            if req is None or req.status != RequestStatus.WAITING_FOR_STREAMING_REQ:
                continue
            if rng.random() < (0.3 if allow_new else 1.0):
                if turns_left[rid] > 0 and allow_new:
                    turns_left[rid] -= 1
                    ledger.add(
                        make_request(
                            rid,
                            prompt(rng.randint(1, 40), 20_000),
                            max_tokens=rng.randint(1, 8),
                            resumable=True,
                        )
                    )
                else:  # the input stream ends: AsyncLLM sends a final non-resumable request
                    sched.add_request(make_request(rid, [0], max_tokens=1))
                    end(rid)
        if allow_new and sched.requests and rng.random() < 0.03:
            rid = rng.choice(sorted(sched.requests))
            sched.finish_requests(rid, RequestStatus.FINISHED_ABORTED)
            end(rid)
        ledger.check()
        if sched.has_requests():
            in_flight.append(ledger.schedule())
        if in_flight and (len(in_flight) >= depth or not sched.has_requests()):
            ledger.update(in_flight.popleft())

    for _ in range(steps):
        tick(allow_new=True)
    for _ in range(2000):
        if not sched.requests and not in_flight:
            break
        tick(allow_new=False)
    assert not in_flight


@BOTH_CLASSES
@ORDERS
@pytest.mark.parametrize("in_flight", [1, 2], ids=["1-in-flight", "2-in-flight"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_workload_keeps_the_invariants(
    make_vllm_scheduler: Any, cls: type, ranking: bool, in_flight: int, seed: int
) -> None:
    """A small cache (preemptions), sessions pausing with Preserve or Discard, aborts, shared
    prefixes, and 1 or 2 steps in flight (async scheduling's batch queue; pipeline parallelism
    for the sync class): after every step the counters agree, and at the end every request
    finished once with its tokens and every block is back."""
    sched = build(
        make_vllm_scheduler,
        cls,
        ranking=ranking,
        num_blocks=30,
        max_num_seqs=6,
        max_num_batched_tokens=256,
        lamps={"allow_swap": False},
    )
    ledger = Ledger(sched)
    random_workload(ledger, random.Random(seed), steps=150, depth=in_flight)
    ledger.check_finished()


# ----- the expected-failure list itself -----------------------------------------------------------


def test_every_expected_failure_names_its_scenario_here() -> None:
    import importlib

    from conformance.expected_failures import EXPECTED_FAILURES

    from lamps.mechanism.versions import TESTED_VERSIONS

    kinds = {"ordering", "victim", "priority", "strategy", "construction", "cache-aware"}
    seen = set()
    for entry in EXPECTED_FAILURES:
        assert entry.test.startswith("tests/") and "::" in entry.test, entry.test
        assert (entry.test, entry.classes) not in seen, f"duplicate entry {entry.test}"
        seen.add((entry.test, entry.classes))
        assert entry.kind in kinds, entry
        assert entry.assertion and entry.reason, entry
        assert set(entry.classes) <= {"LampsSyncScheduler", "LampsScheduler"}, entry
        # Keyed by vLLM version: each one it is expected on is tested, with its lines.
        assert entry.lines and set(entry.lines) <= set(TESTED_VERSIONS), entry.test
        assert all(entry.lines.values()), entry.test
        module, _, name = entry.scenario.rpartition("::")
        where = vars(importlib.import_module(module.removesuffix(".py"))) if module else globals()
        assert callable(where.get(name)), f"no scenario {entry.scenario}"
