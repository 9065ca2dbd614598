"""A vLLM waiting queue whose order the scheduler sets before each step (the authors' ranking).

The LAMPS authors' scheduler (`mars-repository/mars-codebase`, `vllm/core/scheduler_v2.py`
821-850) re-sorts its waiting and swapped requests by score at every iteration and puts the
starvation-promoted ones first. `OrderedQueue` is vLLM's `RequestQueue` interface over a deque
that `reorder` sorts: vLLM pops from the front and puts skipped or preempted requests back at
the front, exactly as with its FCFS queue, until the next `reorder`. Paused sessions are set
aside (`lamps.mechanism.paused_queue.PausedAside`), as in the other queues of this package.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request

from lamps.mechanism.paused_queue import PausedAside, is_paused


class OrderedQueue(PausedAside, RequestQueue):
    """Requests in the order of the last `reorder`; new ones at the back, returned ones in front."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Request] = deque()

    def reorder(self, key: Callable[[Request], Any]) -> None:
        """Sort the queued requests by `key` (stable)."""
        self._queue = deque(sorted(self._queue, key=key))

    def queued(self) -> list[Request]:
        """The queued (not paused) requests, in order."""
        return list(self._queue)

    def _queue_add(self, request: Request) -> None:
        self._queue.append(request)

    def _queue_remove(self, request: Request) -> None:
        self._queue.remove(request)

    def _queue_len(self) -> int:
        return len(self._queue)

    def _queue_iter(self) -> Iterator[Request]:
        return iter(list(self._queue))

    def pop_request(self) -> Request:
        return self._queue.popleft()

    def peek_request(self) -> Request:
        if not self._queue:
            raise IndexError("peek from an empty queue")
        return self._queue[0]

    def prepend_request(self, request: Request) -> None:
        if is_paused(request):
            self.add_request(request)
        else:
            self._queue.appendleft(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in reversed(list(requests)):
            self.prepend_request(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        gone = {id(r) for r in requests if not self._paused.take(r)}
        if gone:
            self._queue = deque(r for r in self._queue if id(r) not in gone)

    def __bool__(self) -> bool:
        """Whether a request is queued (paused sessions never are), as vLLM's loops expect."""
        return bool(self._queue)
