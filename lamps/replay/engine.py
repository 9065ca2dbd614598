"""Replays arrivals through a real vLLM scheduler on a virtual clock (no GPU, no weights).

Each iteration calls ``schedule()``, advances virtual time by the engine model's step time
(``lamps.replay.engine_model``: linear layers, the KV the step's decodes read, its prefill
attention, and swap stalls), and feeds ``update_from_output()`` a generated
``ModelRunnerOutput`` (one deterministic token per request whose prefill is complete).

A policy replays API calls in one of two modes (``ReplayPolicy.api_mode``):
- ``session``: streaming-input sessions. A turn ends at its ``max_tokens``, vLLM parks the
  session in ``WAITING_FOR_STREAMING_REQ``, and after the call the next input chunk (the
  returned tokens) is added with ``Scheduler.add_request`` under the same request id, which is
  how ``EngineCore`` resumes a session.
- ``stateless``: every turn is a new request carrying the whole conversation (as an
  OpenAI-compatible agent resends it), tagged with the session's ``session_id``; only the
  prefix cache links the turns.

Policies that swap run with the LAMPS swap connector (``lamps.vllm.swap``); its scheduler side
is real, its worker side is ``lamps.vllm.swap.simulated_worker``: each copy the connector sends
takes the engine model's link time, one copy at a time per direction, and a step that starts
copies lasts until they end, less the part its compute hides (``hidden_fraction``). The worker
is stepped right after ``schedule()``, at the step's start time, and what has ended by then
reaches the scheduler in that step's ``KVConnectorOutput`` exactly as a worker would report it.

A run stops when every arrival has finished, or at ``stop_at`` (virtual seconds) with requests
still in flight, as the papers' driver stops at its window.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request

from lamps.harness import (
    attention_spec,
    block_hasher,
    build_scheduler,
    build_vllm_config,
    make_request,
    model_runner_output,
    plain_kv_cache_config,
    scheduler_model_dir,
    swap_connector_config,
)
from lamps.replay.engine_model import StepClock
from lamps.replay.policies import ReplayPolicy
from lamps.replay.profiles import GIB, EngineSettings, GpuProfile
from lamps.replay.records import KvUsageSeries, RequestRecord, RunResult
from lamps.vllm.swap import LampsSwapMetadata
from lamps.vllm.swap.simulated_worker import SimulatedSwapWorker
from lamps.workloads import Arrival

_ARRIVE, _RESUME = 0, 1

VOCAB_SIZE = 50400
"""GPT-J's vocabulary; token ids only feed the prefix-cache hashes."""


def model_len_for(context_tokens: int, block_size: int, minimum: int = 2048) -> int:
    """A max_model_len that fits ``context_tokens`` plus the sampled token, block-aligned."""
    need = context_tokens + 1
    return max(minimum, -(-need // block_size) * block_size)


def tokens_for(index: int, start: int, stop: int) -> list[int]:
    """``[token_at(index, p) for p in range(start, stop)]``, vectorized."""
    out = ((np.arange(start, stop, dtype=np.int64) * 7919 + index * 104729) % VOCAB_SIZE).tolist()
    for p in (0, 1):
        if start <= p < stop:
            out[p - start] = token_at(index, p)
    return out


def token_at(index: int, position: int) -> int:
    """Token id at ``position`` of arrival ``index``'s context (unique first block per arrival)."""
    if position == 0:
        return index % VOCAB_SIZE
    if position == 1:
        return (index // VOCAB_SIZE) % VOCAB_SIZE
    return (position * 7919 + index * 104729) % VOCAB_SIZE


class SimEngine:
    """Drives one policy's scheduler over a list of arrivals on a virtual clock."""

    def __init__(
        self,
        profile: GpuProfile,
        policy: ReplayPolicy,
        arrivals: list[Arrival],
        *,
        settings: EngineSettings | None = None,
        window_end: float | None = None,
        stop_at: float | None = None,
        kv_bin_seconds: float = 5.0,
        on_finish: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        if not arrivals:
            raise ValueError("arrivals: nothing to replay")
        settings = settings or EngineSettings()
        self.profile = profile
        self.settings = settings
        self.policy = policy
        self.model = profile.engine_model(settings.hidden_fraction)
        self.arrivals = arrivals
        self.stop_at = stop_at
        self.window_end = window_end
        self.now = 0.0
        self.on_finish = on_finish
        max_ctx = max(a.request.final_context_tokens for a in arrivals)
        max_model_len = model_len_for(max_ctx, profile.block_size, profile.max_model_len)
        # The LAMPS swap connector moves paused sessions' KV to a host pool; the replay
        # simulates its worker side (transfer completions after their link time).
        transfer = (
            swap_connector_config(host_pool_gib=profile.host_memory_bytes / GIB)
            if policy.swap
            else None
        )
        self.vllm_config = build_vllm_config(
            scheduler_model_dir(max_model_len, VOCAB_SIZE),
            max_model_len=max_model_len,
            dtype="float16",
            max_num_seqs=profile.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens
            or profile.max_num_batched_tokens,
            num_blocks=profile.num_blocks(),
            block_size=profile.block_size,
            enable_prefix_caching=settings.enable_prefix_caching,
            policy=policy.queue_policy,
            scheduler_cls=policy.scheduler_cls,
            additional_config=policy.additional_config(),
            kv_transfer_config=transfer,
        )
        # One full-attention group with the profile's KV layout and block count.
        spec = attention_spec(
            block_size=profile.block_size,
            num_kv_heads=profile.num_kv_heads,
            head_size=profile.head_size,
            dtype="float16",
        )
        kv_cache_config = plain_kv_cache_config(spec, profile.num_blocks(), profile.num_layers)
        self.scheduler: Scheduler = build_scheduler(
            self.vllm_config, kv_cache_config, scheduler_cls=policy.scheduler_cls
        )
        policy.attach(self.scheduler, self.clock)
        cache_config = self.vllm_config.cache_config
        self._hasher = block_hasher(cache_config.block_size, cache_config.prefix_caching_hash_algo)
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._by_id: dict[str, RequestRecord] = {}
        self._kv = KvUsageSeries(kv_bin_seconds)
        block_size = profile.block_size
        model = self.model
        self._swap_worker = SimulatedSwapWorker(
            self.clock, lambda blocks: model.swap_seconds(blocks * block_size)
        )
        self._kv_output: KVConnectorOutput | None = None
        self.stall_seconds = 0.0
        self.compute_seconds = 0.0
        self.records = [RequestRecord(a) for a in arrivals]
        for rec in self.records:
            self._push(rec.arrival.time, _ARRIVE, rec)

    def clock(self) -> float:
        """Virtual time in seconds."""
        return self.now

    @property
    def swapped_bytes(self) -> float:
        """KV bytes of every copy sent to the swap worker, both directions."""
        blocks = sum(self._swap_worker.blocks_started.values())
        return blocks * self.profile.block_size * self.model.kv_bytes_per_token

    # -- requests -------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, payload))

    def _make_request(
        self,
        rec: RequestRecord,
        request_id: str,
        start: int,
        stop: int,
        *,
        resumable: bool,
        arrival_time: float,
    ) -> Request:
        index = rec.arrival.index
        seg = rec.arrival.request.segments[rec.segment]
        hints = self.policy.hints(rec.arrival, rec.segment)
        req = make_request(
            request_id,
            tokens_for(index, start, stop),
            max_tokens=seg.output_tokens,
            extra_args={"lamps": hints} if hints is not None else None,
            resumable=resumable,
            arrival_time=arrival_time,
            hasher=self._hasher,
        )
        req.session_id = rec.arrival.request_id
        return req

    def _start_segment(self, rec: RequestRecord) -> None:
        tmpl = rec.arrival.request
        k = rec.segment
        ctx = tmpl.context_before(k)
        last = k == len(tmpl.segments) - 1
        rec.segment_tokens = 0
        if self.policy.api_mode == "stateless":
            # Each turn is a new request carrying the whole conversation.
            req_id = f"{rec.arrival.request_id}.{k}"
            arrival_time = rec.arrival.time if k == 0 else self.now
            req = self._make_request(
                rec, req_id, 0, ctx, resumable=False, arrival_time=arrival_time
            )
            rec.vllm_request = req
            self._by_id[req_id] = rec
            self.scheduler.add_request(req)
            return
        req_id = rec.arrival.request_id
        if k == 0:
            req = self._make_request(
                rec, req_id, 0, ctx, resumable=not last, arrival_time=rec.arrival.time
            )
            rec.vllm_request = req
            self._by_id[req_id] = rec
            self.scheduler.add_request(req)
            return
        # The session kept its context minus the last sampled token (never computed); the next
        # chunk carries that token plus the API's returned tokens.
        returned = tmpl.segments[k - 1].return_tokens
        update = self._make_request(
            rec,
            req_id,
            ctx - returned - 1,
            ctx,
            resumable=True,
            arrival_time=self.policy.resume_arrival_time(rec.arrival, self.now),
        )
        self.scheduler.add_request(update)
        if last:
            # EngineCore closes a session with a non-resumable request under the same id.
            closing = make_request(
                req_id, [0], max_tokens=1, arrival_time=self.now, hasher=self._hasher
            )
            self.scheduler.add_request(closing)

    def _deliver_events(self) -> None:
        while self._events and self._events[0][0] <= self.now:
            _, _, kind, payload = heapq.heappop(self._events)
            if kind == _RESUME:
                payload.segment += 1
            self._start_segment(payload)

    def _start_transfers(self, out: SchedulerOutput) -> None:
        """Steps the simulated swap worker: starts the step's copies, collects what has ended."""
        meta = out.kv_connector_metadata
        if not isinstance(meta, LampsSwapMetadata):
            return
        worker = self._swap_worker
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
        req = rec.vllm_request
        stateless = self.policy.api_mode == "stateless"
        if stateless and req is not None:
            rec.preemptions += req.num_preemptions
        if rec.segment == len(tmpl.segments) - 1:
            if not stateless and req is not None:
                rec.preemptions += req.num_preemptions
            rec.finish_time = self.now
            rec.vllm_request = None
            if self.on_finish is not None:
                self.on_finish(rec)
            return
        rec.api_seconds += seg.api_seconds
        rec.api_calls.append((self.now, self.now + seg.api_seconds))
        self._push(self.now + seg.api_seconds, _RESUME, rec)

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
            if computed >= req.num_tokens:
                sampled[req_id] = token_at(rec.arrival.index, req.num_tokens)
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

    def _idle(self, out: SchedulerOutput, remaining: int) -> bool:
        """Nothing scheduled: report transfers or jump to the next event. False: stop."""
        sched = self.scheduler
        kv_output = self._connector_output()
        if kv_output is not None:
            sched.update_from_output(out, ModelRunnerOutput.with_kv_conn_output_only(kv_output))
            return True
        sched.update_from_output(out, EMPTY_MODEL_RUNNER_OUTPUT)
        upcoming = [self._events[0][0]] if self._events else []
        swap_end = self._swap_worker.next_end()
        if swap_end is not None:
            upcoming.append(swap_end)
        if not upcoming:
            raise RuntimeError(
                f"replay stalled at t={self.now:.3f}s under {self.policy.name}: "
                f"{remaining} requests unfinished, none schedulable, no pending events"
            )
        nxt = min(upcoming)
        if self.stop_at is not None and nxt >= self.stop_at:
            self.now = max(self.now, self.stop_at)
            return False
        self.now = max(self.now, nxt)
        return True

    def _snapshot(self) -> None:
        """The steady window ends: remember each record's output tokens so far."""
        for rec in self.records:
            rec.tokens_at_window = rec.output_tokens

    def run(self) -> RunResult:
        """Replays every arrival to completion (or to ``stop_at``) and returns the records."""
        wall = time.perf_counter()
        sched = self.scheduler
        remaining = len(self.records)
        iterations = 0
        stop_at = self.stop_at if self.stop_at is not None else float("inf")
        window_end = self.window_end if self.window_end is not None else float("inf")
        while remaining and self.now < stop_at:
            if self.now >= window_end:
                self._snapshot()
                window_end = float("inf")
            self._deliver_events()
            out = sched.schedule()
            self._start_transfers(out)
            if out.total_num_scheduled_tokens == 0:
                if not self._idle(out, remaining):
                    break
                continue
            iterations += 1
            sampled: dict[str, int] = {}
            self.now += self._step_time(out, sampled)
            mro = model_runner_output(out, sampled, kv_connector_output=self._connector_output())
            engine_outputs = sched.update_from_output(out, mro)
            for eco in engine_outputs.values():
                for o in eco.outputs:
                    rec = self._by_id[o.request_id]
                    if o.new_token_ids:
                        k = len(o.new_token_ids)
                        rec.output_tokens += k
                        rec.segment_tokens += k
                        if rec.first_token_time is None:
                            rec.first_token_time = self.now
                    if o.finish_reason is not None:
                        self._segment_done(rec)
                        if rec.finished:
                            remaining -= 1
            self.policy.after_iteration(self.now)
            self._kv.add(self.now, sched.kv_cache_manager.usage)
        if window_end != float("inf"):
            self._snapshot()  # everything finished before the window's end
        return RunResult(
            policy=self.policy.name,
            records=self.records,
            kv_usage=self._kv.close(),
            iterations=iterations,
            virtual_seconds=self.now,
            wall_seconds=time.perf_counter() - wall,
            policy_stats={**self.policy.stats(), "swapped_bytes": self.swapped_bytes},
            stopped_at=self.now if remaining else None,
            engine_stats={
                "compute_seconds": self.compute_seconds,
                "swap_stall_seconds": self.stall_seconds,
            },
        )
