"""Per-request LAMPS state kept beside vLLM's Request objects, and the score columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lamps.mechanism.hints import Hints

# Which ranking queue holds a slot (the `where` column), so a full re-score finds each queue's
# handles with one vectorised scan instead of a Python loop.
NOT_QUEUED = 0


@dataclass
class RequestState:
    """What LAMPS knows about one live request; freed when vLLM frees the request."""

    request_id: str
    slot: int
    hints: Hints
    # Strategy (lamps.Strategy) applied to the current pause, None while not paused.
    strategy: int | None = None
    # Clock reading when the current pause started, None while not paused.
    pause_started: float | None = None
    # API duration the current pause was decided with.
    predicted_api_seconds: float = 0.0
    # With redecide="demote": the strategy the pause was classified as (held preserved).
    pending_class: int | None = None
    # Whether vLLM has admitted it to the running batch at least once.
    scheduled_once: bool = False
    # Bumped at every pause so stale re-decision deadlines can be recognised.
    pause_epoch: int = 0
    # Ranking-queue iteration the current wait started, and the one it was last popped in.
    waiting_since: int | None = None
    popped_at: int = -1
    promoted: bool = False
    # API calls the request has made so far (its resumes), and the tool of its first turn (the
    # key its call count is learned under).
    calls: int = 0
    first_tool: str | None = None
    turn_output: int = 0  # output tokens of its last finished turn
    # How often vLLM preempted it while running (bounded by `max_preemptions`).
    preemptions: int = 0


@dataclass(frozen=True)
class ScoreInputs:
    """What a request's score is computed from: its context, its predicted turn, and its
    predicted life after that turn's call (none for a last turn or a one-call-ahead score)."""

    context: int  # tokens in its sequence
    pending: int  # of those, not computed yet
    turn: int  # predicted output tokens of the current turn
    output: int  # of those, still to produce (>= 1)
    api_seconds: float  # predicted API call after the turn (0 = none)
    return_tokens: int  # tokens that call returns
    later_calls: float = 0.0  # expected calls after that one
    later_output: int = 0  # mean output tokens of each of their turns
    later_api_seconds: float = 0.0  # mean duration of each
    later_return: int = 0  # mean tokens each returns
    final_output: int = 0  # output tokens of the final answer (0: the turn is the last)


SEGMENTS_PER_SLOT = 3
"""A slot's score segments: the current turn and its call, the later calls (repeated), the
final answer."""


class RequestTable:
    """Slot allocator plus NumPy score columns indexed by slot (zero-copy input of score_batch)."""

    # The columns, set by _alloc (annotations only: _alloc tells a first allocation by their
    # absence).
    context: npt.NDArray[np.int64]
    pending: npt.NDArray[np.int64]
    output: npt.NDArray[np.int64]
    turn: npt.NDArray[np.int64]
    api_seconds: npt.NDArray[np.float64]
    return_tokens: npt.NDArray[np.int64]
    repeat: npt.NDArray[np.float64]
    queue_of: npt.NDArray[np.int8]  # the queue a slot's request is ranked in, or NOT_QUEUED
    scores: npt.NDArray[np.float64]

    def __init__(self, capacity: int = 256) -> None:
        self._states: dict[str, RequestState] = {}
        self._free: list[int] = []
        self._next_slot = 0
        self._alloc(max(capacity, 1))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "context", None)
        self.capacity = capacity
        k = SEGMENTS_PER_SLOT
        new: dict[str, npt.NDArray[Any]] = {
            "context": np.zeros(capacity, np.int64),
            "pending": np.zeros(capacity, np.int64),
            "output": np.zeros(capacity * k, np.int64),  # per segment; the current turn first
            "turn": np.zeros(capacity, np.int64),
            "api_seconds": np.zeros(capacity * k, np.float64),
            "return_tokens": np.zeros(capacity * k, np.int64),
            "repeat": np.zeros(capacity * k, np.float64),
            "queue_of": np.zeros(capacity, np.int8),
            "scores": np.zeros(capacity, np.float64),
        }
        if old is not None:
            for name, arr in new.items():
                current = getattr(self, name)
                arr[: len(current)] = current
        for name, arr in new.items():
            setattr(self, name, arr)
        self.offsets = np.arange(0, (capacity + 1) * k, k, dtype=np.int64)
        # Every score lets the core choose the strategy of each pause it foresees.
        self.undecided = np.full(capacity * k, -1, np.int8)

    def __len__(self) -> int:
        return len(self._states)

    def get(self, request_id: str) -> RequestState | None:
        """The state of a live request, or None."""
        return self._states.get(request_id)

    def require(self, request_id: str) -> RequestState:
        """The state of a live request; a KeyError naming it if it was never registered."""
        state = self._states.get(request_id)
        if state is None:
            raise KeyError(f"request {request_id!r} has no LAMPS state (never registered)")
        return state

    def add(self, request_id: str, hints: Hints) -> RequestState:
        """Register a request and give it a slot."""
        if request_id in self._states:
            raise KeyError(f"request {request_id!r} is already registered")
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
            if slot >= self.capacity:
                self._alloc(self.capacity * 2)
        state = RequestState(request_id=request_id, slot=slot, hints=hints)
        self._states[request_id] = state
        return state

    def release(self, request_id: str) -> RequestState | None:
        """Forget a request and recycle its slot."""
        state = self._states.pop(request_id, None)
        if state is not None:
            s = state.slot
            self.context[s] = self.pending[s] = self.turn[s] = 0
            segments = slice(s * SEGMENTS_PER_SLOT, (s + 1) * SEGMENTS_PER_SLOT)
            self.output[segments] = self.return_tokens[segments] = 0
            self.api_seconds[segments] = self.repeat[segments] = 0.0
            self.queue_of[s] = NOT_QUEUED
            self._free.append(s)
        return state

    def set_inputs(self, slot: int, inputs: ScoreInputs) -> None:
        """Record one request's score inputs, for the batch re-scores."""
        self.turn[slot] = inputs.turn
        self.context[slot] = inputs.context
        self.pending[slot] = inputs.pending
        k = slot * SEGMENTS_PER_SLOT
        self.output[k : k + 3] = (inputs.output, inputs.later_output, inputs.final_output)
        self.api_seconds[k : k + 3] = (inputs.api_seconds, inputs.later_api_seconds, 0.0)
        self.return_tokens[k : k + 3] = (inputs.return_tokens, inputs.later_return, 0)
        self.repeat[k : k + 3] = (1.0, inputs.later_calls, 1.0 if inputs.final_output else 0.0)

    def num_slots(self) -> int:
        """Slots handed out so far (free ones included)."""
        return self._next_slot
