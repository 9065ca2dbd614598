"""The worker process's side: runs the step's copies on the C++ swap engine and reports them.

A load sent in parts (`SwapInJob.final` False on all but the last) is gathered here and copied
as one engine transfer when its final part arrives: the engine consumes a host copy on its
first completed load, so the parts cannot be copied one by one. The pacing over steps is the
scheduler's (and what the simulated worker models); here only the data movement is exact.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorTransferResults

from lamps.connector.config import GIB, SwapConfig
from lamps.connector.messages import EndedSwapOuts, LampsSwapMetadata, LampsSwapWorkerMetadata
from lamps.swap import PoolExhaustedError, SwapEngine, SwapError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("vllm.lamps.swap")


class WorkerSide:
    """A `SwapWorker` on `lamps.swap.SwapEngine` (its own CUDA streams or CPU copier threads)."""

    def __init__(self, config: SwapConfig, num_host_blocks: int) -> None:
        self.config = config
        self.num_host_blocks = num_host_blocks
        self.engine: SwapEngine | None = None
        self._ended_outs = EndedSwapOuts()
        self._finished_recving: set[str] = set()
        self._failed_recving: set[str] = set()
        self._parts: dict[str, tuple[int, list[int]]] = {}  # load in parts: first block, blocks
        self._load_of: dict[str, str] = {}  # host copy -> request a load from it is for

    def register(self, kv_caches: dict[str, torch.Tensor], num_blocks: int) -> None:
        """Build the swap engine over the model's KV cache tensors."""
        self.engine = SwapEngine(
            kv_caches, self.num_host_blocks, backend=self.config.backend, num_blocks=num_blocks
        )
        logger.info(
            "LAMPS swap engine: backend=%s, %d host blocks of %d bytes (%.2f GiB)",
            self.engine.backend,
            self.engine.num_host_blocks,
            self.engine.host_block_bytes,
            self.engine.num_host_blocks * self.engine.host_block_bytes / GIB,
        )

    def _engine(self) -> SwapEngine:
        if self.engine is None:
            raise RuntimeError("LampsSwapConnector: KV caches were never registered")
        return self.engine

    def start_jobs(self, metadata: LampsSwapMetadata) -> None:
        """Run the step's releases, then start its swap-outs and swap-ins."""
        engine = self._engine()
        for request_id in metadata.release:
            engine.release(request_id)
            self._drop_parts(request_id)
        for job in metadata.swap_out:
            try:
                engine.swap_out(job.request_id, job.block_ids)
            except (PoolExhaustedError, SwapError, ValueError) as e:
                logger.warning("LAMPS swap: swap-out of %s not started: %s", job.request_id, e)
                self._ended_outs.add(job.request_id, ok=False)
        for load in metadata.swap_in:
            first_block, block_ids = load.first_block, load.block_ids
            gathered = self._parts.pop(load.request_id, None)
            if gathered is not None:
                first_block, block_ids = gathered[0], gathered[1] + list(block_ids)
            if not load.final:
                self._parts[load.request_id] = (first_block, list(block_ids))
                continue
            try:
                engine.swap_in(load.copy_id, block_ids, first_block)
                if load.source_id is not None:
                    self._load_of[load.source_id] = load.request_id
            except (SwapError, KeyError, ValueError) as e:
                logger.warning("LAMPS swap: swap-in of %s not started: %s", load.request_id, e)
                self._finished_recving.add(load.request_id)
                self._failed_recving.add(load.request_id)

    def collect_finished(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        """Stop transfers of finished requests; return loads that ended (failed ones in both)."""
        engine = self._engine()
        loads = {request_id: copy_id for copy_id, request_id in self._load_of.items()}
        for request_id in finished_req_ids:
            # A finished request's load is of no use; its blocks are freed once it stops.
            copy_id = loads.get(request_id, request_id)
            if engine.in_flight(copy_id):
                engine.release(copy_id)
            self._drop_parts(request_id)
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
                self._ended_outs.add(done.request_id, ok)
            else:
                request_id = self._load_of.pop(done.request_id, done.request_id)
                self._finished_recving.add(request_id)
                if not ok:
                    self._failed_recving.add(request_id)
        results = KVConnectorTransferResults(
            finished_recving=self._finished_recving, failed_recving=self._failed_recving
        )
        self._finished_recving, self._failed_recving = set(), set()
        return results

    def _drop_parts(self, request_id: str) -> None:
        """A load given up between its parts: report it (failed), as a stopped load is."""
        if self._parts.pop(request_id, None) is not None:
            self._finished_recving.add(request_id)
            self._failed_recving.add(request_id)

    def take_worker_metadata(self) -> LampsSwapWorkerMetadata | None:
        """Swap-outs that ended since the last call (None when none did)."""
        return self._ended_outs.take()

    def shutdown(self) -> None:
        """Drop the engine (its host pool is freed with it)."""
        self.engine = None
