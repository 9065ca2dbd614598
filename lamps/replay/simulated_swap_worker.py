"""A `SwapWorker` on a caller's clock: no tensors, each copy ends after its transfer time.

One copy at a time per direction: a copy starts when the link is free (or now, if later) and
ends `transfer_seconds(num_blocks)` later. It mirrors the swap engine's bookkeeping: a
swap-out that ends well leaves a host copy, a swap-in that ends well consumes it, a release
drops it, and a swap-out over an existing copy or a swap-in without one fails at once. A
released copy, or one of a finished request, still holds its link until its end (a copy
already queued on a stream runs out) and is then reported as failed. `fails(job)` decides
which copies fail (at their end), for tests. A load sent in parts (`SwapInJob.final`) keeps
the host copy until its final part ends and is reported once: then, or when a part fails, or
when it is released between parts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorTransferResults

from lamps.connector.messages import (
    EndedSwapOuts,
    LampsSwapMetadata,
    LampsSwapWorkerMetadata,
    SwapInJob,
    SwapJob,
)

Direction = Literal["out", "in"]
DIRECTIONS: tuple[Direction, Direction] = ("out", "in")


@dataclass
class _Copy:
    request_id: str
    end: float
    fails: bool
    stopped: bool = False
    final: bool = True
    copy_id: str = ""  # the host copy it reads or writes (the request's own unless a source)


class SimulatedSwapWorker:
    """Completes each copy after `transfer_seconds(num_blocks)` on `clock`, FIFO per direction."""

    def __init__(
        self,
        clock: Callable[[], float],
        transfer_seconds: Callable[[int], float],
        *,
        fails: Callable[[SwapJob], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._transfer_seconds = transfer_seconds
        self._fails = fails
        self._links: dict[Direction, deque[_Copy]] = {d: deque() for d in DIRECTIONS}
        self._link_free: dict[Direction, float] = dict.fromkeys(DIRECTIONS, 0.0)
        self._in_flight: dict[str, list[_Copy]] = {}
        self._stored: set[str] = set()
        self._partial: set[str] = set()  # loads whose non-final parts started
        self._failed_loads: set[str] = set()  # reported failed; their later parts are silent
        self._ended_outs = EndedSwapOuts()
        self._finished_recving: set[str] = set()
        self._failed_recving: set[str] = set()
        self.blocks_started: dict[Direction, int] = dict.fromkeys(DIRECTIONS, 0)

    # ----- SwapWorker ----------------------------------------------------------------------

    def start_jobs(self, metadata: LampsSwapMetadata) -> None:
        """Run the step's releases, then start its swap-outs and swap-ins."""
        for request_id in metadata.release:
            self._stop(request_id)
        for job in metadata.swap_out:
            if job.request_id in self._stored or job.request_id in self._in_flight:
                self._ended_outs.add(job.request_id, ok=False)
                continue
            self._launch("out", job)
        for load in metadata.swap_in:
            request_id = load.request_id
            if request_id in self._failed_loads:
                continue
            continuing = request_id in self._partial
            stored = load.copy_id in self._stored
            if not stored or (request_id in self._in_flight and not continuing):
                self._finished_recving.add(request_id)
                self._failed_recving.add(request_id)
                self._partial.discard(request_id)
                continue
            self._launch("in", load)
            if not load.final:
                self._partial.add(request_id)

    def collect_finished(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        """Stop transfers of finished requests; return loads that ended (failed ones in both)."""
        for request_id in finished_req_ids:
            if request_id in self._in_flight or request_id in self._partial:
                self._stop(request_id)
        now = self._clock()
        for direction in DIRECTIONS:
            link = self._links[direction]
            while link and link[0].end <= now:
                self._finish(direction, link.popleft())
        results = KVConnectorTransferResults(
            finished_recving=self._finished_recving, failed_recving=self._failed_recving
        )
        self._finished_recving, self._failed_recving = set(), set()
        return results

    def take_worker_metadata(self) -> LampsSwapWorkerMetadata | None:
        """Swap-outs that ended since the last call (None when none did)."""
        return self._ended_outs.take()

    # ----- for the caller's clock ----------------------------------------------------------

    def next_end(self) -> float | None:
        """When the next copy in flight ends (None when none is)."""
        ends = [link[0].end for link in self._links.values() if link]
        return min(ends) if ends else None

    def busy_until(self) -> float:
        """When both links will have ended every copy started so far."""
        return max(self._link_free.values())

    @property
    def num_in_flight(self) -> int:
        """Copies started and not yet reported."""
        return sum(len(copies) for copies in self._in_flight.values())

    @property
    def num_stored(self) -> int:
        """Requests holding a complete host copy."""
        return len(self._stored)

    # ----- internals -----------------------------------------------------------------------

    def _launch(self, direction: Direction, job: SwapJob) -> None:
        num_blocks = len(job.block_ids)
        start = max(self._clock(), self._link_free[direction])
        end = start + self._transfer_seconds(num_blocks)
        self._link_free[direction] = end
        final = not isinstance(job, SwapInJob) or job.final
        key = job.copy_id if isinstance(job, SwapInJob) else job.request_id
        fails = self._fails is not None and self._fails(job)
        copy = _Copy(job.request_id, end, fails, final=final, copy_id=key)
        self._links[direction].append(copy)
        self._in_flight.setdefault(job.request_id, []).append(copy)
        self.blocks_started[direction] += num_blocks

    def _stop(self, request_id: str) -> None:
        self._stored.discard(request_id)
        copies = self._in_flight.get(request_id)
        for copy in copies or ():
            copy.stopped = True
        if not copies and request_id in self._partial:
            # Released between two parts of its load: nothing in flight will report it.
            self._partial.discard(request_id)
            self._finished_recving.add(request_id)
            self._failed_recving.add(request_id)

    def _finish(self, direction: Direction, copy: _Copy) -> None:
        request_id = copy.request_id
        copies = self._in_flight[request_id]
        copies.remove(copy)
        if not copies:
            del self._in_flight[request_id]
        ok = not (copy.fails or copy.stopped)
        if direction == "out":
            self._ended_outs.add(request_id, ok)
            if ok:
                self._stored.add(request_id)
            return
        if request_id in self._failed_loads:
            if request_id not in self._in_flight:
                self._failed_loads.discard(request_id)
            return
        if ok and not copy.final:
            return
        self._finished_recving.add(request_id)
        self._partial.discard(request_id)
        if ok:
            self._stored.discard(copy.copy_id)
            return
        self._failed_recving.add(request_id)
        if request_id in self._in_flight:
            self._failed_loads.add(request_id)
