"""vLLM's RequestQueue ordered by the LAMPS score, backed by the C++ RankingQueue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request

from lamps._core import RankingQueue
from lamps.mechanism.paused_queue import PausedSessions, is_paused
from lamps.vllm.state import NOT_QUEUED, RequestState, RequestTable

# Records a request's score inputs in the table and returns its score (see LampsScheduler).
Ranker = Callable[[Request, RequestState], float]
# Ticks a request may wait before promotion (None: the queue's threshold; RankingQueue.never).
Patience = Callable[[Request, RequestState], "int | None"]


class RankingRequestQueue(RequestQueue):
    """Smallest LAMPS score first; starved requests get every `promoted_share`-th pop.

    Paused sessions are set aside (`lamps.mechanism.paused_queue`): counted by len() and listed by
    iteration, never returned by peek_request()/pop_request(); `resume()` queues one when its
    next input arrives. `__bool__` is True when peek_request() has a request to return.
    """

    def __init__(
        self,
        table: RequestTable,
        ranker: Ranker,
        queue_id: int,
        starvation_threshold: int,
        patience: Patience | None = None,
        promoted_share: int = 1,
    ) -> None:
        if queue_id == NOT_QUEUED:
            raise ValueError("queue_id must differ from NOT_QUEUED")
        self._table = table
        self._ranker = ranker
        self._patience = patience
        self.queue_id = queue_id
        self._q = RankingQueue(starvation_threshold or None, promoted_share)
        self._by_handle: dict[int, Request] = {}
        self._handle_of: dict[str, int] = {}
        self._paused = PausedSessions()

    @property
    def iteration(self) -> int:
        """The starvation clock (scheduler iterations, or milliseconds for time-based rules)."""
        return self._q.iteration

    def tick(self, ticks: int = 1) -> int:
        """Advance the starvation clock; returns how many requests got promoted."""
        return self._q.tick(ticks)

    def _push(self, request: Request) -> None:
        if is_paused(request):
            self._paused.add(request)
            return
        state = self._state(request)
        score = self._ranker(request, state)
        it = self._q.iteration
        # Popped and pushed back in the same iteration = skipped by this step's scan: the wait
        # (and its starvation count) goes on. Otherwise a new wait starts now.
        if state.waiting_since is None or state.popped_at != it:
            state.waiting_since = it
        starve_after = self._patience(request, state) if self._patience is not None else None
        self._q.push(
            state.slot, score, request.arrival_time, state.waiting_since, state.promoted,
            starve_after,
        )  # fmt: skip
        self._by_handle[state.slot] = request
        self._handle_of[request.request_id] = state.slot
        self._table.queue_of[state.slot] = self.queue_id

    def _state(self, request: Request) -> RequestState:
        state = self._table.get(request.request_id)
        if state is None:
            raise KeyError(f"request {request.request_id!r} is not registered with LAMPS")
        return state

    def _take(self, handle: int) -> Request:
        request = self._by_handle.pop(handle)
        del self._handle_of[request.request_id]
        self._table.queue_of[handle] = NOT_QUEUED
        return request

    def add_request(self, request: Request) -> None:
        """Queue a request at its score."""
        self._push(request)

    def pop_request(self) -> Request:
        """Remove and return the first request (IndexError when none can be scheduled)."""
        handle = self._q.peek()
        promoted = self._q.is_promoted(handle)
        self._q.pop()
        request = self._take(handle)
        state = self._state(request)
        state.popped_at = self._q.iteration
        state.promoted = state.promoted or promoted
        return request

    def peek_request(self) -> Request:
        """The first request, without removing it (IndexError when none can be scheduled)."""
        return self._by_handle[self._q.peek()]

    def prepend_request(self, request: Request) -> None:
        """Re-queue a preempted or skipped request at its score (a ranked queue has no front)."""
        self._push(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """Re-queue several requests at their scores."""
        for request in requests:
            self._push(request)

    def remove_request(self, request: Request) -> None:
        """Remove a specific request (ValueError when absent, as deque.remove)."""
        if not self.discard(request):
            raise ValueError(f"request {request.request_id!r} is not in this queue")

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Remove the given requests that are in this queue."""
        for request in requests:
            self.discard(request)

    def discard(self, request: Request) -> bool:
        """Remove the request if it is queued or set aside here; False when it is not.

        Works from the queue's own index, never from the side table: vLLM may free a request
        (and LAMPS forget its side state) before it removes the request from its queues.
        """
        if self._paused.take(request):
            return True
        handle = self._handle_of.get(request.request_id)
        if handle is None or self._by_handle.get(handle) is not request:
            return False
        self._q.erase(handle)
        self._take(handle)
        return True

    def resume(self, request: Request) -> bool:
        """Queue a paused request whose API call returned; False if it was not set aside here."""
        if not self._paused.take(request):
            return False
        self._push(request)
        return True

    @property
    def num_paused(self) -> int:
        """Paused sessions set aside here (counted by len(), never popped)."""
        return len(self._paused)

    def holds_paused(self, request: Request) -> bool:
        """Whether the request is set aside (paused in an API call) in this queue."""
        return request in self._paused

    def rescore(self, scores: np.ndarray) -> None:
        """Re-key every queued request from `scores` (indexed by slot)."""
        if not self._by_handle:
            return
        handles = np.flatnonzero(self._table.queue_of[: self._table.num_slots()] == self.queue_id)
        self._q.update_many(handles.astype(np.int64, copy=False), scores[handles])

    def __bool__(self) -> bool:
        return bool(self._by_handle)

    def __len__(self) -> int:
        return len(self._by_handle) + len(self._paused)

    def __iter__(self) -> Iterator[Request]:
        """Schedulable requests in pop order, then the paused ones."""
        for handle in self._q.ranked():
            yield self._by_handle[handle]
        yield from self._paused
