"""Parking for vLLM's waiting queues: paused sessions kept aside until their next input.

vLLM's `schedule()` pops every request of a waiting queue it cannot run, only to push it back;
a session waiting for its next input (`WAITING_FOR_STREAMING_REQ`) is exactly such a request,
and with hundreds of sessions in API calls that churn dominates a step. A parking queue keeps
them aside: counted by `len()` and listed by iteration (vLLM's counts stay right), never
returned by `peek_request()`/`pop_request()`, and queued again by `unpark()` when the input
arrives. `ParkedSessions` is the parking lot, `Parking` the queue behaviour over it;
`ParkingPriorityQueue` is vLLM's priority queue with one (FCFS by arrival under equal
priorities), for the baselines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.request_queue import PriorityRequestQueue
from vllm.v1.request import Request, RequestStatus


def is_paused(request: Request) -> bool:
    """Whether the request is a session waiting for its next input."""
    return bool(request.status == RequestStatus.WAITING_FOR_STREAMING_REQ)


class ParkedSessions:
    """Paused sessions by request id, in parking order."""

    def __init__(self) -> None:
        self._parked: dict[str, Request] = {}

    def park(self, request: Request) -> None:
        """Keep a paused session aside."""
        self._parked[request.request_id] = request

    def take(self, request: Request) -> bool:
        """Remove the request if it is parked here; False when it is not."""
        request_id = request.request_id
        if self._parked.get(request_id) is not request:
            return False
        del self._parked[request_id]
        return True

    def __contains__(self, request: Request) -> bool:
        return self._parked.get(request.request_id) is request

    def __len__(self) -> int:
        return len(self._parked)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._parked.values()))


class Parking:
    """Mixin for a vLLM `RequestQueue`: paused sessions parked aside, the rest queued.

    The queue underneath is reached through `_queue_add` and `_queue_remove` (ValueError when
    absent), and it counts and lists only its own requests (`_queue_len`, `_queue_iter`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parked = ParkedSessions()

    def _queue_add(self, request: Request) -> None:
        raise NotImplementedError

    def _queue_remove(self, request: Request) -> None:
        raise NotImplementedError

    def _queue_len(self) -> int:
        raise NotImplementedError

    def _queue_iter(self) -> Iterator[Request]:
        raise NotImplementedError

    @property
    def num_parked(self) -> int:
        """Paused sessions parked here."""
        return len(self._parked)

    def add_request(self, request: Request) -> None:
        """Park a paused session; queue anything else."""
        if is_paused(request):
            self._parked.park(request)
        else:
            self._queue_add(request)

    def remove_request(self, request: Request) -> None:
        """Remove a queued or parked request (ValueError when absent)."""
        if not self._parked.take(request):
            self._queue_remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Remove the given requests that are queued or parked here."""
        for request in [r for r in requests if not self._parked.take(r)]:
            self.discard(request)

    def discard(self, request: Request) -> bool:
        """Remove the request if it is here; False when it is not."""
        if self._parked.take(request):
            return True
        try:
            self._queue_remove(request)
        except ValueError:
            return False
        return True

    def unpark(self, request: Request) -> bool:
        """Queue a parked session whose next input arrived; False if it was not parked here."""
        if not self._parked.take(request):
            return False
        self._queue_add(request)
        return True

    def __len__(self) -> int:
        return self._queue_len() + len(self._parked)

    def __iter__(self) -> Iterator[Request]:
        yield from self._queue_iter()
        yield from self._parked


class ParkingPriorityQueue(Parking, PriorityRequestQueue):
    """vLLM's priority queue (priority, then arrival) with paused sessions parked aside."""

    def _queue_add(self, request: Request) -> None:
        PriorityRequestQueue.add_request(self, request)

    def _queue_remove(self, request: Request) -> None:
        PriorityRequestQueue.remove_request(self, request)

    def _queue_len(self) -> int:
        queued: int = PriorityRequestQueue.__len__(self)
        return queued

    def _queue_iter(self) -> Iterator[Request]:
        queued: Iterator[Request] = PriorityRequestQueue.__iter__(self)
        return queued

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Remove the given requests that are queued or parked here (one heapify)."""
        rest = [r for r in requests if not self._parked.take(r)]
        if rest:
            PriorityRequestQueue.remove_requests(self, rest)

    def prepend_request(self, request: Request) -> None:
        """Same as add_request: a priority queue has no front."""
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """Same as add_request for each."""
        for request in requests:
            self.add_request(request)
