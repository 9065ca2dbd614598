"""LampsSwapConnector: LAMPS' Swap strategy as a vLLM KV connector.

Unlike vLLM's CPU offloading (every block written through to host memory as it is computed), this
connector copies only the blocks of requests the scheduler chose to swap, at their API pause, and
loads them back when they resume:

- pause (scheduler side): `lamps_swap_out(request)` / `request_swap_out(request)` reserves host
  blocks, takes a reference on the request's GPU blocks (so the scheduler may free them at once:
  they return to the pool when the copy has read them) and queues the copy; at most
  `swap_budget_tokens_per_step` tokens per step leave the queue, so copies stay hidden behind
  compute;
- each step (worker side): the queued copies run on the swap engine (`lamps.swap`), on their own
  CUDA streams or CPU copier threads; completions come back in the worker metadata;
- resume: `get_num_new_matched_tokens` reports the swapped tokens beyond the local prefix-cache
  hit as an asynchronous load, so the request waits in WAITING_FOR_REMOTE_KVS until the worker's
  `finished_recving` says its blocks are back; a failed load is recomputed
  (kv_load_failure_policy "recompute"), so nothing is lost.
A full host pool, or a failed swap-out, falls back to Discard (recompute at resume) with a
logged warning.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorTransferResults,
    KVConnectorWorkerMetadata,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from lamps.swap import PoolExhaustedError, SwapEngine, SwapError

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.kv_cache_utils import KVCacheBlock
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = logging.getLogger("vllm.lamps.swap")

_GIB = 1 << 30


@dataclass(frozen=True)
class SwapConfig:
    """Settings from `kv_connector_extra_config`."""

    host_pool_gib: float = 4.0
    swap_budget_tokens_per_step: int = 0  # 0 = unlimited
    backend: str = "auto"

    @classmethod
    def from_extra_config(cls, extra: dict[str, Any]) -> SwapConfig:
        """Parse and check the connector's extra config; ValueError names the bad key."""
        known = {"host_pool_gib", "swap_budget_tokens_per_step", "backend"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"kv_connector_extra_config: unknown key(s) {unknown} for LampsSwapConnector "
                f"(known: {sorted(known)})"
            )
        gib = extra.get("host_pool_gib", cls.host_pool_gib)
        if isinstance(gib, bool) or not isinstance(gib, int | float) or not math.isfinite(gib):
            raise ValueError(f"host_pool_gib: must be a finite number (got {gib!r})")
        if gib <= 0:
            raise ValueError(f"host_pool_gib: must be > 0 (got {gib!r})")
        budget = extra.get("swap_budget_tokens_per_step", cls.swap_budget_tokens_per_step)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(
                f"swap_budget_tokens_per_step: must be an int >= 0, 0 = unlimited (got {budget!r})"
            )
        backend = extra.get("backend", cls.backend)
        if backend not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend: must be 'auto', 'cpu' or 'cuda' (got {backend!r})")
        return cls(float(gib), budget, backend)


def host_pool_blocks(kv_cache_config: KVCacheConfig, host_pool_gib: float) -> int:
    """Host blocks that fit in `host_pool_gib` (both sides compute the same number)."""
    group = kv_cache_config.kv_cache_groups[0]
    block_bytes = group.kv_cache_spec.page_size_bytes * len(group.layer_names)
    return max(int(host_pool_gib * _GIB) // block_bytes, 0)


# ----- metadata --------------------------------------------------------------------------------


@dataclass
class SwapOutJob:
    """Copy the first `len(block_ids)` blocks of a paused request to the host."""

    request_id: str
    block_ids: list[int]


@dataclass
class SwapInJob:
    """Load stored blocks [first_block, first_block + len(block_ids)) into `block_ids`."""

    request_id: str
    block_ids: list[int]
    first_block: int


@dataclass
class LampsSwapMetadata(KVConnectorMetadata):
    """Scheduler -> worker, once per step. Releases run first, then swap-outs, then swap-ins."""

    release: list[str] = field(default_factory=list)
    swap_out: list[SwapOutJob] = field(default_factory=list)
    swap_in: list[SwapInJob] = field(default_factory=list)


@dataclass
class LampsSwapWorkerMetadata(KVConnectorWorkerMetadata):
    """Worker -> scheduler: swap-outs that ended, as (workers ok, workers failed) per request."""

    swap_out_results: dict[str, tuple[int, int]] = field(default_factory=dict)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        """Sum the reports of several workers."""
        assert isinstance(other, LampsSwapWorkerMetadata)
        merged = dict(self.swap_out_results)
        for request_id, (ok, failed) in other.swap_out_results.items():
            prev_ok, prev_failed = merged.get(request_id, (0, 0))
            merged[request_id] = (prev_ok + ok, prev_failed + failed)
        return LampsSwapWorkerMetadata(merged)


# ----- scheduler side --------------------------------------------------------------------------


class SwapOutDecision(enum.Enum):
    """Answer to a swap-out request."""

    ACCEPTED = "accepted"  # queued; the caller frees the GPU blocks now
    REJECTED = "rejected"  # host pool full or nothing to save: Discard instead (warning logged)


@dataclass(frozen=True)
class SwapOutResult:
    """How a swap-out ended (reported once per accepted swap-out of a live request)."""

    request_id: str
    ok: bool
    reason: str = ""


class _State(enum.Enum):
    QUEUED = "queued"  # waiting for swap budget, not sent to the workers yet
    SAVING = "saving"  # copy sent to the workers
    SAVED = "saved"  # host copy complete, GPU blocks returned
    LOADING = "loading"  # swap-in sent, request in WAITING_FOR_REMOTE_KVS


@dataclass
class _Record:
    request: Request
    num_tokens: int
    num_blocks: int
    state: _State
    held_blocks: list[KVCacheBlock] = field(default_factory=list)
    ok_reports: int = 0
    failed_reports: int = 0
    finished: bool = False


class _SchedulerSide:
    """Bookkeeping in the scheduler process: host pool mirror, swap budget, request states."""

    def __init__(
        self, config: SwapConfig, block_size: int, num_host_blocks: int, world_size: int
    ) -> None:
        self.config = config
        self.block_size = block_size
        self.num_host_blocks = num_host_blocks
        self.free_host_blocks = num_host_blocks
        self.world_size = world_size
        self.records: dict[str, _Record] = {}
        self.queue: deque[str] = deque()
        self.pending_release: list[str] = []
        self.pending_in: list[SwapInJob] = []
        self.results: list[SwapOutResult] = []
        self.in_tokens_this_step = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "swap_outs",
                "swapped_out_tokens",
                "swap_ins",
                "swapped_in_tokens",
                "rejected_pool_full",
                "failed_out",
                "failed_in",
                "released",
            ),
            0,
        )

    def drop(self, request_id: str, block_pool: Any) -> None:
        record = self.records.pop(request_id)
        self.free_host_blocks += record.num_blocks
        self.release_gpu_blocks(record, block_pool)

    @staticmethod
    def release_gpu_blocks(record: _Record, block_pool: Any) -> None:
        if record.held_blocks:
            block_pool.free_blocks(reversed(record.held_blocks))
            record.held_blocks = []


class LampsSwapConnector(KVConnectorBase_V1):
    """Swaps paused requests' KV blocks to a host pool and loads them back at resume."""

    _cache_hit_source = CacheHitSource.HOST

    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        if len(kv_cache_config.kv_cache_groups) != 1:
            raise ValueError(
                "LampsSwapConnector supports models with one KV cache group "
                f"(got {len(kv_cache_config.kv_cache_groups)}); run with "
                "--disable-hybrid-kv-cache-manager"
            )
        self.swap_config = SwapConfig.from_extra_config(
            dict(self._kv_transfer_config.kv_connector_extra_config)
        )
        if self._kv_transfer_config.kv_load_failure_policy != "recompute":
            # A failed swap-in must fall back to recompute, never fail the request.
            self._kv_transfer_config.kv_load_failure_policy = "recompute"
            logger.info("LampsSwapConnector: kv_load_failure_policy set to 'recompute'")
        self.block_size = vllm_config.cache_config.block_size
        self._num_host_blocks = host_pool_blocks(kv_cache_config, self.swap_config.host_pool_gib)
        if self._num_host_blocks <= 0:
            raise ValueError(
                f"host_pool_gib: {self.swap_config.host_pool_gib} GiB holds no KV block of this "
                "model; raise it"
            )
        self._sched: _SchedulerSide | None = None
        self._worker: _WorkerSide | None = None
        if role == KVConnectorRole.SCHEDULER:
            self._sched = _SchedulerSide(
                self.swap_config,
                self.block_size,
                self._num_host_blocks,
                vllm_config.parallel_config.world_size,
            )
        else:
            self._worker = _WorkerSide(self.swap_config, self._num_host_blocks)

    @property
    def requires_kv_delivery(self) -> bool:
        # Nothing is handed off when a request finishes.
        return False

    # ----- the LAMPS scheduler's seam ----------------------------------------------------------

    @property
    def num_host_blocks(self) -> int:
        """Capacity of the host pool in blocks."""
        return self._num_host_blocks

    @property
    def num_free_host_blocks(self) -> int:
        """Host blocks not reserved by a swap (scheduler side)."""
        return self._scheduler.free_host_blocks

    @property
    def swap_budget_tokens_per_step(self) -> int:
        """Tokens each direction may move per step (0 = unlimited)."""
        return self.swap_config.swap_budget_tokens_per_step

    def lamps_swap_out(self, request: Request) -> bool:
        """Take over a paused request's KV: True means the caller may free its GPU blocks now."""
        return self.request_swap_out(request) == SwapOutDecision.ACCEPTED

    def request_swap_out(
        self, request: Request, block_ids: Iterable[int] | None = None
    ) -> SwapOutDecision:
        """Queue a swap-out of the request's computed KV (call while it still holds its blocks).

        On ACCEPTED the connector holds its own reference on the blocks until the copy has read
        them, so the caller frees the request's blocks right away (as for Discard). `block_ids`,
        when given, must be the request's blocks (checked).
        """
        sched = self._scheduler
        request_id = request.request_id
        existing = sched.records.get(request_id)
        if existing is not None:
            if existing.finished:
                # The copy of an earlier pause is still being stopped; its host blocks are
                # not back yet.
                return SwapOutDecision.REJECTED
            raise ValueError(
                f"request_id: {request_id!r} already has a swap in state {existing.state.value}"
            )
        if request.is_finished():
            raise ValueError(f"request_id: {request_id!r} is finished; nothing to swap out")
        num_tokens = request.num_computed_tokens
        if num_tokens <= 0:
            return SwapOutDecision.REJECTED
        manager = self._kv_cache_manager
        if manager is None:
            raise RuntimeError("LampsSwapConnector: no KV cache manager bound")
        num_blocks = math.ceil(num_tokens / self.block_size)
        blocks = manager.get_blocks(request_id).blocks[0]
        if len(blocks) < num_blocks:
            raise ValueError(
                f"request_id: {request_id!r} holds {len(blocks)} blocks but has {num_tokens} "
                f"computed tokens ({num_blocks} blocks)"
            )
        blocks = list(blocks[:num_blocks])
        if block_ids is not None:
            expected = [b.block_id for b in blocks]
            given = list(block_ids)[:num_blocks]
            if given != expected:
                raise ValueError(
                    f"block_ids: {given} are not the blocks of request {request_id!r} ({expected})"
                )
        if num_blocks > sched.free_host_blocks:
            sched.stats["rejected_pool_full"] += 1
            logger.warning(
                "LAMPS swap: host pool full (%d of %d blocks free, request %s needs %d); "
                "falling back to Discard",
                sched.free_host_blocks,
                sched.num_host_blocks,
                request_id,
                num_blocks,
            )
            return SwapOutDecision.REJECTED
        manager.block_pool.touch(blocks)
        sched.free_host_blocks -= num_blocks
        sched.records[request_id] = _Record(
            request, num_tokens, num_blocks, _State.QUEUED, held_blocks=blocks
        )
        sched.queue.append(request_id)
        return SwapOutDecision.ACCEPTED

    def take_swap_out_results(self) -> list[SwapOutResult]:
        """Swap-outs that ended since the last call (ok=False: the request will recompute)."""
        sched = self._scheduler
        results, sched.results = sched.results, []
        return results

    def release_swap(self, request_id: str) -> bool:
        """Drop a request's host copy or queued swap-out; False when it has none."""
        sched = self._scheduler
        record = sched.records.get(request_id)
        if record is None or record.state == _State.LOADING:
            return False
        self._release(request_id, record)
        return True

    def swap_state(self, request_id: str) -> str | None:
        """ "queued", "saving", "saved", "loading", or None."""
        record = self._scheduler.records.get(request_id)
        return None if record is None else record.state.value

    def swapped_tokens(self, request_id: str) -> int:
        """Tokens of the request's host copy (0 when none)."""
        record = self._scheduler.records.get(request_id)
        return 0 if record is None else record.num_tokens

    def swap_stats(self) -> dict[str, int]:
        """Cumulative counters of the scheduler side."""
        return dict(self._scheduler.stats)

    # ----- scheduler side: vLLM's connector interface -----------------------------------------

    @property
    def _scheduler(self) -> _SchedulerSide:
        if self._sched is None:
            raise RuntimeError("LampsSwapConnector: scheduler-side method called on a worker")
        return self._sched

    def _release(self, request_id: str, record: _Record) -> None:
        sched = self._scheduler
        sched.stats["released"] += 1
        if record.state == _State.QUEUED:
            sched.queue.remove(request_id)
            sched.drop(request_id, self._block_pool)
        elif record.state == _State.SAVED:
            sched.pending_release.append(request_id)
            sched.drop(request_id, self._block_pool)
        else:
            # In flight: the workers abort it and report; the host blocks and the GPU blocks we
            # hold come back with that report.
            sched.pending_release.append(request_id)
            record.finished = True

    @property
    def _block_pool(self) -> Any:
        assert self._kv_cache_manager is not None
        return self._kv_cache_manager.block_pool

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        sched = self._scheduler
        record = sched.records.get(request.request_id)
        if record is None or record.finished or record.state == _State.LOADING:
            return 0, False
        remaining = record.num_tokens - num_computed_tokens
        if record.state != _State.SAVED:
            # The copy is still being made. What the local prefix cache does not cover is a
            # partial block at most: recompute it; otherwise wait for the copy.
            return (0, False) if remaining < self.block_size else (None, False)
        if remaining <= 0:
            return 0, False
        budget = self.swap_config.swap_budget_tokens_per_step
        if budget and sched.in_tokens_this_step and sched.in_tokens_this_step + remaining > budget:
            return None, False
        return remaining, True

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        sched = self._scheduler
        record = sched.records.get(request.request_id)
        if record is None or record.finished:
            return
        if num_external_tokens == 0:
            if record.state != _State.LOADING:
                # Resumed from the device: the local prefix cache had it all, or the copy was
                # still in flight. The host copy is of no further use.
                self._release(request.request_id, record)
            return
        assert record.state == _State.SAVED
        local_tokens = record.num_tokens - num_external_tokens
        # vLLM hands the connector a block-aligned local hit, so the load starts on a block.
        assert local_tokens % self.block_size == 0, (local_tokens, self.block_size)
        first_block = local_tokens // self.block_size
        block_ids = blocks.get_block_ids()[0][first_block : record.num_blocks]
        sched.pending_in.append(SwapInJob(request.request_id, block_ids, first_block))
        sched.in_tokens_this_step += num_external_tokens
        sched.stats["swap_ins"] += 1
        sched.stats["swapped_in_tokens"] += num_external_tokens
        record.state = _State.LOADING

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        sched = self._scheduler
        meta = LampsSwapMetadata(release=sched.pending_release, swap_in=sched.pending_in)
        sched.pending_release, sched.pending_in = [], []
        sched.in_tokens_this_step = 0
        budget = self.swap_config.swap_budget_tokens_per_step
        sent = 0
        while sched.queue:
            record = sched.records[sched.queue[0]]
            if budget and sent and sent + record.num_tokens > budget:
                break
            request_id = sched.queue.popleft()
            meta.swap_out.append(SwapOutJob(request_id, [b.block_id for b in record.held_blocks]))
            record.state = _State.SAVING
            sent += record.num_tokens
            sched.stats["swap_outs"] += 1
            sched.stats["swapped_out_tokens"] += record.num_tokens
        return meta

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        sched = self._scheduler
        meta = connector_output.kv_connector_worker_meta
        if isinstance(meta, LampsSwapWorkerMetadata):
            for request_id, (ok, failed) in meta.swap_out_results.items():
                self._on_swap_out_report(request_id, ok, failed)
        failed_in = connector_output.failed_recving or set()
        for request_id in connector_output.finished_recving or ():
            record = sched.records.get(request_id)
            if record is None or record.state != _State.LOADING:
                continue
            if request_id in failed_in and not record.finished:
                sched.stats["failed_in"] += 1
                logger.warning(
                    "LAMPS swap: swap-in of request %s failed; it recomputes instead", request_id
                )
            sched.drop(request_id, self._block_pool)

    def _on_swap_out_report(self, request_id: str, ok: int, failed: int) -> None:
        sched = self._scheduler
        record = sched.records.get(request_id)
        if record is None or record.state != _State.SAVING:
            return
        record.ok_reports += ok
        record.failed_reports += failed
        if record.ok_reports + record.failed_reports < sched.world_size:
            return
        # The copy has read the GPU blocks (or stopped): hand them back to the pool.
        sched.release_gpu_blocks(record, self._block_pool)
        if record.finished:
            sched.drop(request_id, self._block_pool)
            return
        if record.failed_reports:
            sched.stats["failed_out"] += 1
            logger.warning(
                "LAMPS swap: swap-out of request %s failed; it recomputes at resume (Discard)",
                request_id,
            )
            sched.pending_release.append(request_id)
            sched.drop(request_id, self._block_pool)
            sched.results.append(SwapOutResult(request_id, False, "swap-out failed"))
            return
        record.state = _State.SAVED
        sched.results.append(SwapOutResult(request_id, True))

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        sched = self._scheduler
        record = sched.records.get(request.request_id)
        if record is None:
            return False, None
        if record.state == _State.LOADING:
            # vLLM keeps the blocks until the worker reports the (aborted) load finished.
            record.finished = True
            sched.pending_release.append(request.request_id)
            return False, None
        self._release(request.request_id, record)
        # The connector holds its own references on any blocks a copy may still read.
        return False, None

    def has_pending_push_work(self) -> bool:
        # Keep the engine stepping until queued copies are sent and their blocks come back.
        sched = self._scheduler
        return any(r.state in (_State.QUEUED, _State.SAVING) for r in sched.records.values())

    # ----- worker side -------------------------------------------------------------------------

    @property
    def _workerside(self) -> _WorkerSide:
        if self._worker is None:
            raise RuntimeError("LampsSwapConnector: worker-side method called on the scheduler")
        return self._worker

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._workerside.register(kv_caches, self._kv_cache_config.num_blocks)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, LampsSwapMetadata)
        self._workerside.start(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        # Loads are asynchronous: a request runs only after its whole load is reported.
        return

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: AttentionMetadata,
        **kwargs: Any,
    ) -> None:
        # Nothing is written through: swap-outs happen only at pauses.
        return

    def wait_for_save(self) -> None:
        return

    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        return self._workerside.collect(finished_req_ids)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        results = self.get_transfer_results(finished_req_ids)
        return results.finished_sending or None, results.finished_recving or None

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        if self._worker is None:
            return None
        return self._worker.take_worker_meta()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()


class _WorkerSide:
    """The worker process: runs the copies on the swap engine and reports how they ended."""

    def __init__(self, config: SwapConfig, num_host_blocks: int) -> None:
        self.config = config
        self.num_host_blocks = num_host_blocks
        self.engine: SwapEngine | None = None
        self.out_results: dict[str, tuple[int, int]] = {}
        self.finished_recving: set[str] = set()
        self.failed_recving: set[str] = set()

    def register(self, kv_caches: dict[str, torch.Tensor], num_blocks: int) -> None:
        self.engine = SwapEngine(
            kv_caches, self.num_host_blocks, backend=self.config.backend, num_blocks=num_blocks
        )
        logger.info(
            "LAMPS swap engine: backend=%s, %d host blocks of %d bytes (%.2f GiB)",
            self.engine.backend,
            self.engine.num_host_blocks,
            self.engine.host_block_bytes,
            self.engine.num_host_blocks * self.engine.host_block_bytes / _GIB,
        )

    def _engine(self) -> SwapEngine:
        if self.engine is None:
            raise RuntimeError("LampsSwapConnector: KV caches were never registered")
        return self.engine

    def start(self, meta: LampsSwapMetadata) -> None:
        engine = self._engine()
        for request_id in meta.release:
            engine.release(request_id)
        for job in meta.swap_out:
            try:
                engine.swap_out(job.request_id, job.block_ids)
            except (PoolExhaustedError, SwapError, ValueError) as e:
                logger.warning("LAMPS swap: swap-out of %s not started: %s", job.request_id, e)
                self.out_results[job.request_id] = (0, 1)
        for job in meta.swap_in:
            try:
                engine.swap_in(job.request_id, job.block_ids, job.first_block)
            except (SwapError, KeyError, ValueError) as e:
                logger.warning("LAMPS swap: swap-in of %s not started: %s", job.request_id, e)
                self.finished_recving.add(job.request_id)
                self.failed_recving.add(job.request_id)

    def collect(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        engine = self._engine()
        for request_id in finished_req_ids:
            # A finished request's load is of no use; its blocks are freed once it stops.
            if engine.in_flight(request_id):
                engine.release(request_id)
        for done in engine.poll():
            ok = done.status == "done"
            if not ok:
                logger.warning(
                    "LAMPS swap: swap-%s of %s %s %s",
                    done.direction,
                    done.request_id,
                    done.status,
                    done.error,
                )
            if done.direction == "out":
                self.out_results[done.request_id] = (1, 0) if ok else (0, 1)
            else:
                self.finished_recving.add(done.request_id)
                if not ok:
                    self.failed_recving.add(done.request_id)
        results = KVConnectorTransferResults(
            finished_recving=self.finished_recving, failed_recving=self.failed_recving
        )
        self.finished_recving, self.failed_recving = set(), set()
        return results

    def take_worker_meta(self) -> LampsSwapWorkerMetadata | None:
        if not self.out_results:
            return None
        meta = LampsSwapWorkerMetadata(self.out_results)
        self.out_results = {}
        return meta

    def shutdown(self) -> None:
        self.engine = None
