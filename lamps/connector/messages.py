"""What crosses between the two sides: the step's jobs, both metadata types, the worker protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorMetadata,
    KVConnectorTransferResults,
    KVConnectorWorkerMetadata,
)


@dataclass
class SwapOutJob:
    """Copy the first `len(block_ids)` blocks of a paused request to the host."""

    request_id: str
    block_ids: list[int]


@dataclass
class SwapInJob:
    """Load stored blocks [first_block, first_block + len(block_ids)) into `block_ids`.

    A load paced over several steps is sent as several jobs, in order, over consecutive stored
    blocks; all but the last have `final` False. The request is reported in `finished_recving`
    once, when its final job ends (or at once, when a part fails or the load is released).
    The host copy read is `source_id`'s when given (a parked session turn's copy, loaded into
    the session's next request), else the request's own; the load is reported as the request's.
    """

    request_id: str
    block_ids: list[int]
    first_block: int
    final: bool = True
    source_id: str | None = None

    @property
    def copy_id(self) -> str:
        """The host copy this load reads."""
        return self.source_id or self.request_id


SwapJob = SwapOutJob | SwapInJob


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
        if not isinstance(other, LampsSwapWorkerMetadata):
            raise TypeError(
                f"other: cannot aggregate {type(other).__name__} into LampsSwapWorkerMetadata"
            )
        merged = dict(self.swap_out_results)
        for request_id, (ok, failed) in other.swap_out_results.items():
            prev_ok, prev_failed = merged.get(request_id, (0, 0))
            merged[request_id] = (prev_ok + ok, prev_failed + failed)
        return LampsSwapWorkerMetadata(merged)


class EndedSwapOuts:
    """A worker side's swap-outs that ended since it last reported them."""

    def __init__(self) -> None:
        self._results: dict[str, tuple[int, int]] = {}

    def add(self, request_id: str, ok: bool) -> None:
        """Record how a request's swap-out ended on this worker."""
        self._results[request_id] = (1, 0) if ok else (0, 1)

    def take(self) -> LampsSwapWorkerMetadata | None:
        """The ended swap-outs as worker metadata, forgetting them (None when none ended)."""
        if not self._results:
            return None
        meta = LampsSwapWorkerMetadata(self._results)
        self._results = {}
        return meta


class SwapWorker(Protocol):
    """A worker side, called once per step in this order (as vLLM's model runner does)."""

    def start_jobs(self, metadata: LampsSwapMetadata) -> None:
        """Run the step's releases, then start its swap-outs and swap-ins."""
        ...

    def collect_finished(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        """Stop transfers of finished requests; return loads that ended (failed ones in both)."""
        ...

    def take_worker_metadata(self) -> LampsSwapWorkerMetadata | None:
        """Swap-outs that ended since the last call (None when none did)."""
        ...
