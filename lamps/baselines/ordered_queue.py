"""A vLLM waiting queue whose order the scheduler sets before each step (the authors' ranking).

The LAMPS authors' scheduler (`mars-repository/mars-codebase`, `vllm/core/scheduler_v2.py`
821-850) re-sorts its waiting and swapped requests by score at every iteration and puts the
starvation-promoted ones first. `OrderedQueue` is vLLM's `RequestQueue` interface over a deque
that `reorder` sorts: vLLM pops from the front and puts skipped or preempted requests back at
the front, exactly as with its FCFS queue, until the next `reorder`. Paused sessions are parked
aside (`lamps.vllm.parking.ParkedSessions`), as in the other queues of this package.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request

from lamps.vllm.parking import ParkedSessions, is_paused


class OrderedQueue(RequestQueue):
    """Requests in the order of the last `reorder`; new ones at the back, returned ones in front."""

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()
        self._parked = ParkedSessions()

    def reorder(self, key: Callable[[Request], Any]) -> None:
        """Sort the queued requests by `key` (stable)."""
        self._queue = deque(sorted(self._queue, key=key))

    def queued(self) -> list[Request]:
        """The queued (not parked) requests, in order."""
        return list(self._queue)

    @property
    def num_parked(self) -> int:
        """Paused sessions parked here."""
        return len(self._parked)

    def add_request(self, request: Request) -> None:
        if is_paused(request):
            self._parked.park(request)
        else:
            self._queue.append(request)

    def pop_request(self) -> Request:
        return self._queue.popleft()

    def peek_request(self) -> Request:
        if not self._queue:
            raise IndexError("peek from an empty queue")
        return self._queue[0]

    def prepend_request(self, request: Request) -> None:
        if is_paused(request):
            self._parked.park(request)
        else:
            self._queue.appendleft(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in reversed(list(requests)):
            self.prepend_request(request)

    def remove_request(self, request: Request) -> None:
        if not self._parked.take(request):
            self._queue.remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        gone = {id(r) for r in requests if not self._parked.take(r)}
        if gone:
            self._queue = deque(r for r in self._queue if id(r) not in gone)

    def discard(self, request: Request) -> bool:
        """Remove the request if it is here; False when it is not."""
        if self._parked.take(request):
            return True
        try:
            self._queue.remove(request)
        except ValueError:
            return False
        return True

    def unpark(self, request: Request) -> bool:
        """Queue a parked session whose next input arrived; False if it was not parked here."""
        if not self._parked.take(request):
            return False
        self._queue.append(request)
        return True

    def __bool__(self) -> bool:
        """Whether a request is queued (parked sessions never are), as vLLM's loops expect."""
        return bool(self._queue)

    def __len__(self) -> int:
        return len(self._queue) + len(self._parked)

    def __iter__(self) -> Iterator[Request]:
        yield from list(self._queue)
        yield from self._parked
