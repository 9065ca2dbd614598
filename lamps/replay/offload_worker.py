"""vLLM's ``OffloadingConnector`` worker side on the replay's clock: copies take link time.

It follows ``offloading/worker.py`` of vLLM 0.32 step by step (``lamps.baselines.
vllm_offload`` cites the lines): at a step's start the stores deferred from the previous step
and this step's ``jobs_to_flush`` are submitted (``handle_preemptions``), then this step's
loads (``start_kv_transfers``); this step's other stores wait for the next step
(``prepare_store_kv``); what has ended is reported as ``get_finished`` and
``build_connector_worker_meta`` report it: loads in ``finished_recving``, every job in
``OffloadingWorkerMetadata.completed_jobs``, with its bytes and seconds in ``transfer_stats``.

No tensors: a copy of ``n`` blocks holds its direction's host link (stores GPU to host, loads
host to GPU, one copy at a time each, FIFO) for ``EngineModel.swap_seconds(n * block_size)``.
The engine stretches a step by what its links still need beyond the compute that hides them,
as for the LAMPS swap worker. What differs from vLLM: a flush (``worker.wait``) blocks the
step until its stores end, where the engine lets compute hide that wait like any copy; vLLM's
jobs never fail (its worker asserts success), so none fail here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
    TransferJob,
)
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.kv_offload.base import GPULoadStoreSpec
from vllm.v1.outputs import KVConnectorOutput

from lamps.replay.engine_model import EngineModel

Direction = Literal["out", "in"]


@dataclass(frozen=True)
class _Copy:
    job_id: int
    blocks: int
    seconds: float
    end: float
    request_id: str | None  # a load's request (stores report no request)


def gpu_blocks(job: TransferJob, *, load: bool) -> int:
    """GPU blocks a job moves (a store reads them, a load writes them)."""
    spec = job.dst_spec if load else job.src_spec
    if not isinstance(spec, GPULoadStoreSpec):
        raise TypeError(f"offload job for {job.req_id}: GPU side is {type(spec).__name__}")
    return len(spec.block_ids)


class SimulatedOffloadWorker:
    """Completes each offload job after its link time on ``clock``, FIFO per direction."""

    def __init__(self, clock: Callable[[], float], model: EngineModel, block_size: int) -> None:
        self._clock = clock
        self._model = model
        self._block_size = block_size
        self._links: dict[Direction, deque[_Copy]] = {"out": deque(), "in": deque()}
        self._link_free: dict[Direction, float] = {"out": 0.0, "in": 0.0}
        self._deferred_stores: list[tuple[int, int]] = []  # (job id, blocks), next step's
        self._worker_meta = OffloadingWorkerMetadata()
        self._finished_recving: set[str] = set()
        self.blocks_started: dict[str, int] = {"out": 0, "in": 0}
        self.blocks_ended: dict[str, int] = {"out": 0, "in": 0}
        self.jobs_ended: dict[str, int] = {"out": 0, "in": 0}
        self.flushes = 0

    # ----- ReplayWorker ----------------------------------------------------------------------

    def step(self, out: SchedulerOutput) -> KVConnectorOutput | None:
        """One engine step of the worker side; what has ended by now, as vLLM reports it."""
        meta = out.kv_connector_metadata
        if meta is not None:
            if not isinstance(meta, OffloadingConnectorMetadata):
                raise TypeError(f"expected OffloadingConnectorMetadata, got {type(meta).__name__}")
            self._start(meta)
        return self._collect()

    def busy_until(self) -> float:
        """When both links will have ended every copy started so far."""
        return max(self._link_free.values())

    def next_end(self) -> float | None:
        """When the next copy ends; now while stores wait for the next step (vLLM steps on:
        ``has_pending_push_work``); None when nothing is pending."""
        if self._deferred_stores:
            return self._clock()
        ends = [link[0].end for link in self._links.values() if link]
        return min(ends) if ends else None

    # ----- for the results -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Tokens, bytes and jobs moved by copies that ended, per direction."""
        tokens = {d: n * self._block_size for d, n in self.blocks_ended.items()}
        per_token = self._model.kv_bytes_per_token
        return {
            "offload_stored_tokens": tokens["out"],
            "offload_loaded_tokens": tokens["in"],
            "offload_stored_bytes": tokens["out"] * per_token,
            "offload_loaded_bytes": tokens["in"] * per_token,
            "offload_stores": self.jobs_ended["out"],
            "offload_loads": self.jobs_ended["in"],
            "offload_flushes": self.flushes,
        }

    # ----- internals -------------------------------------------------------------------------

    def _start(self, meta: OffloadingConnectorMetadata) -> None:
        flush = meta.jobs_to_flush or set()
        # handle_preemptions: this step's flushed stores join the deferred ones; all start now.
        for job_id, job in meta.store_jobs.items():
            if job_id in flush:
                self._deferred_stores.append((job_id, gpu_blocks(job, load=False)))
        for job_id, blocks in self._deferred_stores:
            self._launch("out", job_id, blocks, None)
        self._deferred_stores = []
        if flush:
            self.flushes += 1
        # start_kv_transfers: this step's loads. vLLM 0.33's sync loads (only with the
        # `sync_load_budget_bytes` option, off by default) feed the step itself: no
        # finished_recving for them.
        for job_id, job in meta.load_jobs.items():
            request = None if getattr(job, "sync", False) else job.req_id
            self._launch("in", job_id, gpu_blocks(job, load=True), request)
        # prepare_store_kv: the rest of this step's stores start with the next step.
        for job_id, job in meta.store_jobs.items():
            if job_id not in flush:
                self._deferred_stores.append((job_id, gpu_blocks(job, load=False)))

    def _launch(self, direction: Direction, job_id: int, blocks: int, request: str | None) -> None:
        seconds = self._model.swap_seconds(blocks * self._block_size)
        end = max(self._clock(), self._link_free[direction]) + seconds
        self._link_free[direction] = end
        self._links[direction].append(_Copy(job_id, blocks, seconds, end, request))
        self.blocks_started[direction] += blocks

    def _collect(self) -> KVConnectorOutput | None:
        now = self._clock()
        for direction, link in self._links.items():
            while link and link[0].end <= now:
                self._finish(direction, link.popleft())
        if not self._worker_meta.completed_jobs:
            return None
        meta, self._worker_meta = self._worker_meta, OffloadingWorkerMetadata()
        recving, self._finished_recving = self._finished_recving, set()
        return KVConnectorOutput(
            finished_sending=set(), finished_recving=recving, kv_connector_worker_meta=meta
        )

    def _finish(self, direction: Direction, copy: _Copy) -> None:
        nbytes = round(copy.blocks * self._block_size * self._model.kv_bytes_per_token)
        stats = self._worker_meta.transfer_stats
        (stats.load if direction == "in" else stats.store).record(nbytes, copy.seconds)
        self._worker_meta.mark_completed(copy.job_id)
        if copy.request_id is not None:
            self._finished_recving.add(copy.request_id)
        self.blocks_ended[direction] += copy.blocks
        self.jobs_ended[direction] += 1
