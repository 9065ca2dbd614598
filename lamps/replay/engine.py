"""Replays arrivals through a real vLLM scheduler on a virtual clock (no GPU, no weights).

Each iteration calls ``schedule()``, advances virtual time by the engine model's step time
(``lamps.replay.engine_model``: linear layers, the KV the step's decodes read, its prefill
attention, and swap stalls), and feeds ``update_from_output()`` a generated
``ModelRunnerOutput`` (one deterministic token per request whose prefill is complete, from the
flow's token source: ``lamps.replay.tokens``, ``lamps.replay.traced_tokens``). Conversations
arrive from a flow (``lamps.replay.flows``: arrivals known up front, traced conversations with
their sub-agents, or closed-loop users), which also says when each turn starts; each turn's
requests are built by ``lamps.replay.turn_requests``, and every turn is recorded
(``records.TurnRecord``: sent, first token, prefill computed, cached and loaded tokens).

A policy replays API calls in one of two modes (``ReplayPolicy.api_mode``):
- ``session``: streaming-input sessions. A turn ends at its ``max_tokens``, vLLM parks the
  session in ``WAITING_FOR_STREAMING_REQ``, and after the call the next input chunk (the
  returned tokens) is added with ``Scheduler.add_request`` under the same request id, which is
  how ``EngineCore`` resumes a session. A next input that does not extend the session's
  context (a traced conversation's compaction) ends that session; the conversation goes on in
  a new one.
- ``stateless``: every turn is a new request carrying the whole conversation (as an
  OpenAI-compatible agent resends it), tagged with the session's ``session_id``; only the
  prefix cache links the turns.

Policies that swap run with the LAMPS swap connector (``lamps.connector``); its scheduler side
is real, its worker side is ``lamps.replay.simulated_swap_worker``: each copy the connector sends
takes the engine model's link time, one copy at a time per direction, and a step that starts
copies lasts until they end, less the part its compute hides (``hidden_fraction``). The worker
is stepped right after ``schedule()``, at the step's start time, and what has ended by then
reaches the scheduler in that step's ``KVConnectorOutput`` exactly as a worker would report it.
``lamps.replay.engine_setup`` builds a policy's scheduler, its connector and its worker.

A run stops when every arrival has finished, or at ``stop_at`` (virtual seconds) with requests
still in flight, as the papers' driver stops at its window.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.metrics.stats import PrefillStats
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput

from lamps.connector import LampsSwapMetadata
from lamps.harness import block_hasher, model_runner_output
from lamps.replay.engine_model import StepClock
from lamps.replay.engine_setup import (
    build_policy_scheduler,
    kv_transfer_for,
    policy_vllm_config,
    settings_ran,
    swap_worker_for,
)
from lamps.replay.flows import ArrivalFlow, Event, Start, flow_for
from lamps.replay.modes import ApiMode
from lamps.replay.policies import ReplayPolicy
from lamps.replay.profiles import EngineSettings, GpuProfile
from lamps.replay.records import KvUsageSeries, RequestRecord, RunResult, TurnRecord
from lamps.replay.simulated_swap_worker import SimulatedSwapWorker
from lamps.replay.tokens import SeededHasher, model_len_for
from lamps.replay.turn_requests import TurnRequests
from lamps.replay.workers import ReplayWorker
from lamps.workloads import Arrival

_ARRIVE, _RESUME = 0, 1


class SimEngine:
    """Drives one policy's scheduler over a list of arrivals on a virtual clock."""

    def __init__(
        self,
        profile: GpuProfile,
        policy: ReplayPolicy,
        arrivals: list[Arrival] | ArrivalFlow,
        *,
        settings: EngineSettings | None = None,
        window_end: float | None = None,
        stop_at: float | None = None,
        kv_bin_seconds: float = 5.0,
        on_finish: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        flow = arrivals if isinstance(arrivals, ArrivalFlow) else flow_for(arrivals)
        settings = settings or EngineSettings()
        self.profile = profile
        self.policy = policy
        self.model = profile.engine_model(settings.hidden_fraction)
        self.flow = flow
        self.tokens = flow.tokens
        self.stop_at = stop_at
        self.window_end = window_end
        self.now = 0.0
        self.on_finish = on_finish
        max_ctx = max(t.final_context_tokens for t in flow.templates())
        max_model_len = model_len_for(max_ctx, profile.block_size, profile.max_model_len)
        transfer = kv_transfer_for(policy, profile)
        self.vllm_config = policy_vllm_config(profile, policy, settings, max_model_len, transfer)
        self.scheduler: Scheduler = build_policy_scheduler(profile, policy, self.vllm_config)
        policy.attach(self.scheduler, self.clock)
        # What ran (the requested settings completed by the scheduler's), for the results.
        self.settings: dict[str, Any] = settings_ran(
            self.scheduler, self.vllm_config, profile, settings, transfer is not None
        )
        cache_config = self.vllm_config.cache_config
        self._hasher = SeededHasher(
            block_hasher(cache_config.block_size, cache_config.prefix_caching_hash_algo)
        )
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._turns = TurnRequests(
            self.scheduler, policy, flow, self._hasher, profile.block_size, self.clock
        )
        self._by_id = self._turns.by_id
        self._kv = KvUsageSeries(kv_bin_seconds)
        self._swap_worker: SimulatedSwapWorker | ReplayWorker = swap_worker_for(
            policy, self.clock, self.model, profile.block_size
        )
        self._kv_output: KVConnectorOutput | None = None
        self.stall_seconds = 0.0
        self.compute_seconds = 0.0
        self.records: list[RequestRecord] = []
        self.unfinished = 0
        self.iterations = 0
        self._step: tuple[SchedulerOutput, dict[str, int]] | None = None  # the step in flight
        self.step_end: float | None = None
        for a in flow.initial():
            self._add(a)

    def clock(self) -> float:
        """Virtual time in seconds."""
        return self.now

    @property
    def swapped_bytes(self) -> float:
        """KV bytes of every copy sent to the swap worker, both directions."""
        blocks = sum(self._swap_worker.blocks_started.values())
        return blocks * self.profile.block_size * self.model.kv_bytes_per_token

    @property
    def swapped_in_tokens(self) -> int:
        """Tokens of KV the swap worker copied back from the host."""
        return self._swap_worker.blocks_started["in"] * self.profile.block_size

    # -- requests -------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, payload))

    def _add(self, arrival: Arrival) -> None:
        rec = RequestRecord(arrival)
        self.records.append(rec)
        self.unfinished += 1
        self._push(arrival.time, _ARRIVE, rec)

    def _apply(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, Start):
                self._add(e.arrival)
            else:
                self._push(e.time, _RESUME, e)

    def _start_segment(self, rec: RequestRecord) -> None:
        self._turns.start(rec)

    def _deliver_events(self) -> None:
        while self._events and self._events[0][0] <= self.now:
            t, _, kind, payload = heapq.heappop(self._events)
            rec, k = (payload, 0) if kind == _ARRIVE else (payload.record, payload.segment)
            rec.segment = k
            rec.turns.append(TurnRecord(k, t, self.tokens.input_tokens(rec, k)))
            self._start_segment(rec)

    def _start_transfers(self, out: SchedulerOutput) -> None:
        """Steps the simulated swap worker: starts the step's copies, collects what has ended."""
        worker = self._swap_worker
        if not isinstance(worker, SimulatedSwapWorker):
            self._kv_output = worker.step(out)  # the policy's own worker
            return
        meta = out.kv_connector_metadata
        if not isinstance(meta, LampsSwapMetadata):
            return
        worker.start_jobs(meta)
        results = worker.collect_finished(out.finished_req_ids)
        worker_meta = worker.take_worker_metadata()
        if results.finished_recving or worker_meta is not None:
            self._kv_output = KVConnectorOutput(
                finished_recving=results.finished_recving or None,
                failed_recving=results.failed_recving,
                kv_connector_worker_meta=worker_meta,
            )

    def _connector_output(self) -> KVConnectorOutput | None:
        output, self._kv_output = self._kv_output, None
        return output

    def _segment_done(self, rec: RequestRecord) -> None:
        tmpl = rec.arrival.request
        seg = tmpl.segments[rec.segment]
        if rec.segment_tokens != seg.output_tokens:
            raise RuntimeError(
                f"{rec.arrival.request_id} segment {rec.segment}: produced {rec.segment_tokens} "
                f"tokens, the trace says {seg.output_tokens}"
            )
        rec.turns[-1].finish = self.now
        req = rec.vllm_request
        stateless = self.policy.api_mode == ApiMode.STATELESS
        if stateless and req is not None:
            rec.preemptions += req.num_preemptions
        if rec.segment == len(tmpl.segments) - 1:
            if not stateless and req is not None:
                rec.preemptions += req.num_preemptions
            rec.finish_time = self.now
            rec.vllm_request = None
            self.unfinished -= 1
            if self.on_finish is not None:
                self.on_finish(rec)
            self._apply(self.flow.finished(rec, self.now))
            return
        rec.api_seconds += seg.api_seconds
        rec.api_calls.append((self.now, self.now + seg.api_seconds))
        self._apply(self.flow.segment_done(rec, self.now))

    # -- main loop ------------------------------------------------------------------------

    def _step_time(self, out: SchedulerOutput, sampled: dict[str, int]) -> float:
        """Seconds the step takes (engine model), and each record's service and token count.

        Also fills ``sampled``: one token per request whose known sequence is now computed."""
        clock = StepClock(self.model)
        requests = self.scheduler.requests
        by_id = self._by_id
        scheduled = out.num_scheduled_tokens
        for req_id, k in scheduled.items():
            req = requests[req_id]
            # After schedule() num_computed_tokens already counts this step's tokens.
            computed = req.num_computed_tokens
            clock.add(computed - k, k)
            rec = by_id[req_id]
            rec.scheduled_tokens += k
            turn = rec.turns[-1]
            if turn.first_token is None:
                turn.computed += k
            if computed >= req.num_tokens:
                sampled[req_id] = self.tokens.sampled(rec, req.num_tokens)
        compute = clock.compute_seconds()
        stall = 0.0
        busy_until = self._swap_worker.busy_until()
        if busy_until > self.now:
            stall = self.model.stall_seconds(busy_until - self.now, compute)
        self.compute_seconds += compute
        self.stall_seconds += stall
        dt = compute + stall
        for req_id in scheduled:
            by_id[req_id].service_seconds += dt
        return dt

    def next_wake(self) -> float | None:
        """When an idle engine has work again: its next event or copy end (None: never)."""
        ends = [self._events[0][0] if self._events else None, self._swap_worker.next_end()]
        return min((t for t in ends if t is not None), default=None)

    def _snapshot(self) -> None:
        """The steady window ends: remember each record's output tokens so far."""
        for rec in self.records:
            rec.tokens_at_window = rec.output_tokens

    def begin_step(self) -> float | None:
        """Schedules at ``now``: the step's end, ``now`` (copies reported) or None (idle)."""
        self._deliver_events()
        out = self.scheduler.schedule()
        self._start_transfers(out)
        if out.total_num_scheduled_tokens == 0:
            kv = self._connector_output()
            self.scheduler.update_from_output(out, ModelRunnerOutput.with_kv_conn_output_only(kv))
            return None if kv is None else self.now
        self.iterations += 1
        sampled: dict[str, int] = {}
        self.step_end = self.now + self._step_time(out, sampled)
        self._step = (out, sampled)
        return self.step_end

    def finish_step(self) -> None:
        """The step in flight ends at ``step_end``: its outputs reach the scheduler."""
        assert self._step is not None and self.step_end is not None, "no step in flight"
        (out, sampled), self._step = self._step, None
        self.now, self.step_end = self.step_end, None
        mro = model_runner_output(out, sampled, kv_connector_output=self._connector_output())
        engine_outputs = self.scheduler.update_from_output(out, mro)
        for eco in engine_outputs.values():
            for o in eco.outputs:
                rec = self._by_id[o.request_id]
                if o.prefill_stats is not None:
                    _note_prefill(rec.turns[-1], o.prefill_stats)
                if o.new_token_ids:
                    k = len(o.new_token_ids)
                    rec.output_tokens += k
                    rec.segment_tokens += k
                    if rec.first_token_time is None:
                        rec.first_token_time = self.now
                    if rec.turns[-1].first_token is None:
                        rec.turns[-1].first_token = self.now
                if o.finish_reason is not None:
                    self._segment_done(rec)
        self.policy.after_iteration(self.now)
        self._kv.add(self.now, self.scheduler.kv_cache_manager.usage)

    def run(self) -> RunResult:
        """Replays every arrival to completion (or to ``stop_at``) and returns the records."""
        wall = time.perf_counter()
        stop_at = self.stop_at if self.stop_at is not None else float("inf")
        window_end = self.window_end if self.window_end is not None else float("inf")
        while self.unfinished and self.now < stop_at:
            if self.now >= window_end:
                self._snapshot()
                window_end = float("inf")
            due = self.begin_step()
            if self._step is not None:
                self.finish_step()
            elif due is None:
                due = self.next_wake()
                if due is None:
                    raise RuntimeError(
                        f"replay stalled at t={self.now:.3f}s under {self.policy.name}: "
                        f"{self.unfinished} unfinished, none schedulable, no pending events"
                    )
                self.now = max(self.now, min(due, stop_at))
        if window_end != float("inf"):
            self._snapshot()  # everything finished before the window's end
        return RunResult(
            policy=self.policy.name,
            records=self.records,
            kv_usage=self._kv.close(),
            iterations=self.iterations,
            virtual_seconds=self.now,
            wall_seconds=time.perf_counter() - wall,
            policy_stats={**self.policy.stats(), "swapped_bytes": self.swapped_bytes},
            stopped_at=self.now if self.unfinished else None,
            engine_stats={
                "compute_seconds": self.compute_seconds,
                "swap_stall_seconds": self.stall_seconds,
            },
            settings=self.settings,
        )


def _note_prefill(turn: TurnRecord, stats: PrefillStats) -> None:
    """vLLM's own count of a new request's prompt tokens found cached (GPU) or loaded."""
    turn.cached = stats.num_local_cached_tokens
    turn.loaded = stats.num_external_cached_tokens
