"""LampsSwapConnector: LAMPS' Swap strategy as a vLLM KV connector (the facade over its sides).

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
logged warning. For InferCept's passive swap (`lamps.baselines`) loads may be paced over
several steps (`lamps_pace_loads`) and a host copy may be given up (`lamps_drop_copy`).

It declares what it offers the pause mechanism (`lamps.mechanism.capabilities`): `SwapsPausedKv`
and `KeepsSessionTurns`. Parked turns of HTTP sessions (`lamps.vllm.sessions`) are swapped too:
`lamps_park_turn(key, blocks, hashes)` copies a finished request's full blocks under a copy id
of their own, and the session's next request (a new request id) is matched to the copy by its
block hashes and loads it (`session_copies`).

The package is laid out as vLLM's offloading connector (`lamps.connector`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorTransferResults,
    KVConnectorWorkerMetadata,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from lamps.connector.config import SwapConfig, host_pool_blocks
from lamps.connector.messages import (
    LampsSwapMetadata,
)
from lamps.connector.records import SwapOutDecision
from lamps.connector.scheduler_side import SchedulerSide
from lamps.connector.session_copies import SessionCopies
from lamps.connector.worker_side import WorkerSide
from lamps.mechanism.capabilities import KeepsSessionTurns, SwapsPausedKv
from lamps.mechanism.compat import (
    connector_num_gpu_blocks,
    connector_step_metadata,
    connector_transfer_config,
)

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks, KVCacheManager
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request


logger = logging.getLogger("vllm.lamps.swap")


class LampsSwapConnector(KVConnectorBase_V1, SwapsPausedKv, KeepsSessionTurns):
    """Swaps paused requests' KV blocks to a host pool and loads them back at resume."""

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
        transfer_config = connector_transfer_config(self)
        self.swap_config = SwapConfig.from_extra_config(
            dict(transfer_config.kv_connector_extra_config)
        )
        if transfer_config.kv_load_failure_policy != "recompute":
            # A failed swap-in must fall back to recompute, never fail the request.
            transfer_config.kv_load_failure_policy = "recompute"
            logger.info("LampsSwapConnector: kv_load_failure_policy set to 'recompute'")
        self.block_size = vllm_config.cache_config.block_size
        self._num_host_blocks = host_pool_blocks(kv_cache_config, self.swap_config.host_pool_gib)
        if self._num_host_blocks <= 0:
            raise ValueError(
                f"host_pool_gib: {self.swap_config.host_pool_gib} GiB holds no KV block of this "
                "model; raise it"
            )
        self._sched: SchedulerSide | None = None
        self._turns: SessionCopies | None = None
        self._worker: WorkerSide | None = None
        if role == KVConnectorRole.SCHEDULER:
            self._sched = SchedulerSide(
                self.swap_config,
                self.block_size,
                self._num_host_blocks,
                vllm_config.parallel_config.world_size,
            )
            self._turns = SessionCopies(self._sched)
        else:
            self._worker = WorkerSide(self.swap_config, self._num_host_blocks)

    @property
    def scheduler_side(self) -> SchedulerSide:
        """The scheduler-role state machine; RuntimeError on a worker."""
        if self._sched is None:
            raise RuntimeError("LampsSwapConnector: scheduler-side method called on a worker")
        return self._sched

    @property
    def worker_side(self) -> WorkerSide:
        """The worker-role swap engine driver; RuntimeError on the scheduler."""
        if self._worker is None:
            raise RuntimeError("LampsSwapConnector: worker-side method called on the scheduler")
        return self._worker

    @property
    def requires_kv_delivery(self) -> bool:
        """False: nothing is handed off when a request finishes."""
        return False

    # ----- the pause mechanism's seam: SwapsPausedKv, KeepsSessionTurns -----------------------

    @property
    def num_host_blocks(self) -> int:
        """Capacity of the host pool in blocks."""
        return self._num_host_blocks

    @property
    def num_free_host_blocks(self) -> int:
        """Host blocks not reserved by a swap (scheduler side)."""
        return self.scheduler_side.free_host_blocks

    def lamps_swap_out(self, request: Request) -> bool:
        """Take over a paused request's KV: True means the caller may free its GPU blocks now."""
        return self.request_swap_out(request) == SwapOutDecision.ACCEPTED

    def request_swap_out(self, request: Request) -> SwapOutDecision:
        """Queue a swap-out of the request's KV; on ACCEPTED the caller frees its blocks at once."""
        return self.scheduler_side.request_swap_out(request)

    def lamps_drop_copy(self, request_id: str) -> bool:
        """Give up a request's host copy (not one being loaded): it recomputes at resume."""
        return self.scheduler_side.drop_copy(request_id)

    def lamps_pending_free_blocks(self) -> int:
        """GPU blocks that return to the pool when the copies reading them end."""
        return self.scheduler_side.pending_free_blocks()

    def lamps_link_backlog_tokens(self) -> tuple[int, int]:
        """Tokens of the copies not yet ended, (out, in): what a new copy waits behind."""
        return self.scheduler_side.backlog_tokens()

    def lamps_pace_loads(self, tokens_per_step: int | None) -> None:
        """Send at most `tokens_per_step` tokens of loads per step (None: whole loads)."""
        self.scheduler_side.pace_loads(tokens_per_step)

    def swap_state(self, request_id: str) -> str | None:
        """ "queued", "saving", "saved", "loading", or None."""
        return self.scheduler_side.swap_state(request_id)

    def swapped_tokens(self, request_id: str) -> int:
        """Tokens of the request's host copy (0 when none)."""
        return self.scheduler_side.swapped_tokens(request_id)

    def swap_stats(self) -> dict[str, int]:
        """Cumulative counters of the scheduler side (the parked turns' copies included)."""
        return {**self.scheduler_side.stats, **self.turn_copies.stats}

    @property
    def turn_copies(self) -> SessionCopies:
        """The parked session turns' copies (scheduler side); RuntimeError on a worker."""
        if self._turns is None:
            raise RuntimeError("LampsSwapConnector: scheduler-side method called on a worker")
        return self._turns

    def lamps_park_turn(self, key: str, blocks: list[Any], hashes: list[Any]) -> bool:
        """Copy a parked session turn's full blocks to the host pool; False when it is full."""
        return self.turn_copies.park(key, blocks, hashes)

    def lamps_drop_turn(self, key: str) -> None:
        """Forget the copy of a parked turn (no-op when none)."""
        self.turn_copies.drop(key)

    # ----- scheduler side: vLLM's connector interface -----------------------------------------

    def bind_kv_cache_manager(self, kv_cache_manager: KVCacheManager) -> None:
        """Bind the scheduler's cache manager (the scheduler side holds blocks of its pool)."""
        super().bind_kv_cache_manager(kv_cache_manager)
        self.scheduler_side.bind(kv_cache_manager)

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Swapped tokens beyond the local hit, loaded asynchronously (None: not yet)."""
        side = self.scheduler_side
        if request.request_id not in side.records:
            matched = self.turn_copies.match(request, num_computed_tokens)
            if matched is not None:
                return matched
        return side.get_num_new_matched_tokens(request, num_computed_tokens)

    def get_external_cache_hit_sources(
        self, request: Request, num_external_tokens: int
    ) -> dict[CacheHitSource, int]:
        """Every token this connector loads comes from host memory."""
        return {CacheHitSource.HOST: num_external_tokens} if num_external_tokens else {}

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """Queue the request's load into its new blocks, or give up its host copy."""
        if not self.turn_copies.update_state_after_alloc(request, blocks, num_external_tokens):
            self.scheduler_side.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        """The step's releases, swap-outs and swap-ins for the workers."""
        meta = self.scheduler_side.build_connector_meta()
        self.turn_copies.build(meta)
        return meta

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        """Apply the workers' reports of the step."""
        self.scheduler_side.update_connector_output(connector_output)
        self.turn_copies.update_connector_output(connector_output)

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        """Give up the request's swap; never delays freeing (the connector holds its own refs)."""
        self.scheduler_side.request_finished(request)
        self.turn_copies.request_finished(request)
        return False, None

    def has_pending_push_work(self) -> bool:
        """Keep the engine stepping until queued copies are sent and their blocks come back."""
        return (
            self.scheduler_side.has_pending_push_work() or self.turn_copies.has_pending_push_work()
        )

    # ----- worker side: vLLM's connector interface --------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Build the worker's swap engine over the KV cache tensors."""
        self.worker_side.register(kv_caches, connector_num_gpu_blocks(self))

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        """Start the step's jobs (loads are asynchronous)."""
        meta = connector_step_metadata(self)
        if not isinstance(meta, LampsSwapMetadata):
            raise TypeError(f"connector metadata: expected LampsSwapMetadata, got {type(meta)}")
        self.worker_side.start_jobs(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Nothing to wait for: a request runs only after its whole load is reported."""
        return

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: AttentionMetadata,
        **kwargs: Any,
    ) -> None:
        """Nothing is written through: swap-outs happen only at pauses."""
        return

    def wait_for_save(self) -> None:
        """Nothing to wait for: swap-outs are reported when they end."""
        return

    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        """Loads that ended (failed ones also in failed_recving)."""
        return self.worker_side.collect_finished(finished_req_ids)

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        """Swap-outs that ended since the last step."""
        if self._worker is None:
            return None
        return self._worker.take_worker_metadata()

    def shutdown(self) -> None:
        """Drop the worker's swap engine."""
        if self._worker is not None:
            self._worker.shutdown()
