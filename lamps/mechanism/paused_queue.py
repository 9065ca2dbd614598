"""Paused sessions set aside in vLLM's waiting queues until their next input.

vLLM's `schedule()` pops every request of a waiting queue it cannot run, only to push it back;
a session waiting for its next input (`WAITING_FOR_STREAMING_REQ`) is exactly such a request,
and with hundreds of sessions in API calls that churn dominates a step. A queue with
`PausedAside` keeps them aside: counted by `len()` and listed by iteration (vLLM's counts stay
right), never returned by `peek_request()`/`pop_request()`, and queued again by `resume()` when
the input arrives. `PausedSessions` holds them, `PausedAside` is the queue behaviour over it;
`PausedAsidePriorityQueue` is vLLM's priority queue with it (FCFS by arrival under equal
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


class PausedSessions:
    """Paused sessions by request id, in the order they paused."""

    def __init__(self) -> None:
        self._paused: dict[str, Request] = {}

    def add(self, request: Request) -> None:
        """Keep a paused session aside."""
        self._paused[request.request_id] = request

    def take(self, request: Request) -> bool:
        """Remove the request if it is set aside here; False when it is not."""
        request_id = request.request_id
        if self._paused.get(request_id) is not request:
            return False
        del self._paused[request_id]
        return True

    def __contains__(self, request: Request) -> bool:
        return self._paused.get(request.request_id) is request

    def __len__(self) -> int:
        return len(self._paused)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._paused.values()))


class PausedAside:
    """Mixin for a vLLM `RequestQueue`: paused sessions set aside, the rest queued.

    The queue underneath is reached through `_queue_add` and `_queue_remove` (ValueError when
    absent), and it counts and lists only its own requests (`_queue_len`, `_queue_iter`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paused = PausedSessions()

    def _queue_add(self, request: Request) -> None:
        raise NotImplementedError

    def _queue_remove(self, request: Request) -> None:
        raise NotImplementedError

    def _queue_len(self) -> int:
        raise NotImplementedError

    def _queue_iter(self) -> Iterator[Request]:
        raise NotImplementedError

    @property
    def num_paused(self) -> int:
        """Paused sessions set aside here."""
        return len(self._paused)

    def add_request(self, request: Request) -> None:
        """Park a paused session; queue anything else."""
        if is_paused(request):
            self._paused.add(request)
        else:
            self._queue_add(request)

    def remove_request(self, request: Request) -> None:
        """Remove a queued or set-aside request (ValueError when absent)."""
        if not self._paused.take(request):
            self._queue_remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Remove the given requests that are queued or set aside here."""
        for request in [r for r in requests if not self._paused.take(r)]:
            self.discard(request)

    def discard(self, request: Request) -> bool:
        """Remove the request if it is here; False when it is not."""
        if self._paused.take(request):
            return True
        try:
            self._queue_remove(request)
        except ValueError:
            return False
        return True

    def resume(self, request: Request) -> bool:
        """Queue a paused session whose next input arrived; False if it was not set aside here."""
        if not self._paused.take(request):
            return False
        self._queue_add(request)
        return True

    def __len__(self) -> int:
        return self._queue_len() + len(self._paused)

    def __iter__(self) -> Iterator[Request]:
        yield from self._queue_iter()
        yield from self._paused


class PausedAsidePriorityQueue(PausedAside, PriorityRequestQueue):
    """vLLM's priority queue (priority, then arrival) with paused sessions set aside."""

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
        """Remove the given requests that are queued or set aside here (one heapify)."""
        rest = [r for r in requests if not self._paused.take(r)]
        if rest:
            PriorityRequestQueue.remove_requests(self, rest)

    def prepend_request(self, request: Request) -> None:
        """Same as add_request: a priority queue has no front."""
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """Same as add_request for each."""
        for request in requests:
            self.add_request(request)
