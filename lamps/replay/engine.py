"""Replays arrivals through a real vLLM scheduler on a virtual clock (no GPU, no weights).

Each iteration calls ``schedule()``, advances virtual time by the cost model's iteration time
for the scheduled tokens, and feeds ``update_from_output()`` a generated ``ModelRunnerOutput``
(one deterministic token per request whose prefill is complete). API calls are streaming-input
sessions: a turn ends at its ``max_tokens``, vLLM parks the session in
``WAITING_FOR_STREAMING_REQ``, and after the call's duration the next input chunk (the
returned tokens) is added with ``Scheduler.add_request`` under the same request id, which is
how ``EngineCore`` resumes a session.

Policies that swap run with the LAMPS swap connector (``lamps.vllm.swap``); its scheduler side
is real, its worker side is ``lamps.vllm.swap.simulated_worker``: each copy the connector sends
completes after the profile's link time (``CostModel.swap_seconds``), one copy at a time per
direction, overlapped with compute. The worker is stepped right after ``schedule()``, at the
step's start time, and what has ended by then reaches the scheduler in that step's
``KVConnectorOutput`` exactly as a worker would report it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from lamps.replay.policies import ReplayPolicy
from lamps.replay.profiles import GIB, GpuProfile
from lamps.vllm.swap import LampsSwapMetadata
from lamps.vllm.swap.simulated_worker import SimulatedSwapWorker
from lamps.workloads import Arrival

_ARRIVE, _RESUME = 0, 1

VOCAB_SIZE = 50400
"""GPT-J's vocabulary; token ids only feed the prefix-cache hashes."""


def model_len_for(context_tokens: int, block_size: int) -> int:
    """A max_model_len that fits ``context_tokens`` plus the sampled token, block-aligned."""
    need = context_tokens + 1
    return max(2048, -(-need // block_size) * block_size)


def token_at(index: int, position: int) -> int:
    """Token id at ``position`` of arrival ``index``'s context (unique first block per arrival)."""
    if position == 0:
        return index % VOCAB_SIZE
    if position == 1:
        return (index // VOCAB_SIZE) % VOCAB_SIZE
    return (position * 7919 + index * 104729) % VOCAB_SIZE


@dataclass
class RequestRecord:
    """What happened to one arrival during a replay."""

    arrival: Arrival
    segment: int = 0
    segment_tokens: int = 0
    output_tokens: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    api_seconds: float = 0.0
    service_seconds: float = 0.0
    scheduled_tokens: int = 0
    preemptions: int = 0
    vllm_request: Request | None = None

    @property
    def finished(self) -> bool:
        """Whether the last segment has produced its last token."""
        return self.finish_time is not None


@dataclass
class RunResult:
    """Records and time series of one (policy, arrivals) replay."""

    policy: str
    records: list[RequestRecord]
    kv_usage: list[tuple[float, float]]
    iterations: int
    virtual_seconds: float
    wall_seconds: float
    policy_stats: dict[str, Any] = field(default_factory=dict)


class KvUsageSeries:
    """KV-cache usage averaged over fixed virtual-time bins."""

    def __init__(self, bin_seconds: float) -> None:
        self.bin_seconds = bin_seconds
        self.points: list[tuple[float, float]] = []
        self._bin = 0
        self._sum = 0.0
        self._n = 0

    def add(self, t: float, usage: float) -> None:
        """Records the usage observed at virtual time ``t``."""
        b = int(t // self.bin_seconds)
        if b != self._bin and self._n:
            self.points.append(((self._bin + 0.5) * self.bin_seconds, self._sum / self._n))
            self._sum, self._n = 0.0, 0
        self._bin = b
        self._sum += usage
        self._n += 1

    def close(self) -> list[tuple[float, float]]:
        """Flushes the last bin and returns the series."""
        if self._n:
            self.points.append(((self._bin + 0.5) * self.bin_seconds, self._sum / self._n))
            self._n = 0
        return self.points


class SimEngine:
    """Drives one policy's scheduler over a list of arrivals on a virtual clock."""

    def __init__(
        self,
        profile: GpuProfile,
        policy: ReplayPolicy,
        arrivals: list[Arrival],
        *,
        kv_bin_seconds: float = 5.0,
        on_finish: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        if not arrivals:
            raise ValueError("arrivals: nothing to replay")
        self.profile = profile
        self.policy = policy
        self.cost = profile.cost()
        self.arrivals = arrivals
        self.now = 0.0
        self.on_finish = on_finish
        max_ctx = max(a.request.final_context_tokens for a in arrivals)
        max_model_len = model_len_for(max_ctx, profile.block_size)
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
            max_num_batched_tokens=profile.max_num_batched_tokens,
            num_blocks=profile.num_blocks(),
            block_size=profile.block_size,
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
        self._swap_worker = SimulatedSwapWorker(
            self.clock, lambda blocks: self.cost.swap_seconds(blocks * block_size)
        )
        self._kv_output: KVConnectorOutput | None = None
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
        return blocks * self.profile.block_size * self.cost.kv_bytes_per_token

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
        return make_request(
            request_id,
            [token_at(index, p) for p in range(start, stop)],
            max_tokens=seg.output_tokens,
            extra_args={"lamps": hints} if hints is not None else None,
            resumable=resumable,
            arrival_time=arrival_time,
            hasher=self._hasher,
        )

    def _start_segment(self, rec: RequestRecord) -> None:
        tmpl = rec.arrival.request
        k = rec.segment
        ctx = tmpl.context_before(k)
        last = k == len(tmpl.segments) - 1
        rec.segment_tokens = 0
        if not self.policy.sessions:
            # vLLM without sessions: each segment is a new request carrying the whole context.
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
        if not self.policy.sessions and req is not None:
            rec.preemptions += req.num_preemptions
        if rec.segment == len(tmpl.segments) - 1:
            if self.policy.sessions and req is not None:
                rec.preemptions += req.num_preemptions
            rec.finish_time = self.now
            rec.vllm_request = None
            if self.on_finish is not None:
                self.on_finish(rec)
            return
        rec.api_seconds += seg.api_seconds
        self._push(self.now + seg.api_seconds, _RESUME, rec)

    # -- main loop ------------------------------------------------------------------------

    def _model_output(self, out: SchedulerOutput) -> ModelRunnerOutput:
        """One sampled token per request whose known sequence is fully computed."""
        sampled: dict[str, int] = {}
        requests = self.scheduler.requests
        for req_id in out.num_scheduled_tokens:
            req = requests[req_id]
            # After schedule() num_computed_tokens already counts this step's tokens; a request
            # samples once its whole known sequence has been computed.
            if req.num_computed_tokens >= req.num_tokens:
                sampled[req_id] = token_at(self._by_id[req_id].arrival.index, req.num_tokens)
        return model_runner_output(out, sampled, kv_connector_output=self._connector_output())

    def run(self) -> RunResult:
        """Replays every arrival to completion and returns the records."""
        wall = time.perf_counter()
        sched = self.scheduler
        remaining = len(self.records)
        iterations = 0
        while remaining:
            self._deliver_events()
            out = sched.schedule()
            self._start_transfers(out)
            n = out.total_num_scheduled_tokens
            if n == 0:
                kv_output = self._connector_output()
                if kv_output is not None:
                    sched.update_from_output(
                        out, ModelRunnerOutput([], {}, kv_connector_output=kv_output)
                    )
                    continue
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
                self.now = max(self.now, min(upcoming))
                continue
            iterations += 1
            dt = self.cost.iteration_seconds(n)
            self.now += dt
            for req_id, k in out.num_scheduled_tokens.items():
                rec = self._by_id[req_id]
                rec.scheduled_tokens += k
                rec.service_seconds += dt
            mro = self._model_output(out)
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
        return RunResult(
            policy=self.policy.name,
            records=self.records,
            kv_usage=self._kv.close(),
            iterations=iterations,
            virtual_seconds=self.now,
            wall_seconds=time.perf_counter() - wall,
            policy_stats={**self.policy.stats(), "swapped_bytes": self.swapped_bytes},
        )
