"""Per-request LAMPS state kept beside vLLM's Request objects, and the score columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamps.vllm.hints import Hints

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


@dataclass(frozen=True)
class ScoreInputs:
    """What a request's score is computed from: its context and its predicted turn."""

    context: int  # tokens in its sequence
    pending: int  # of those, not computed yet
    turn: int  # predicted output tokens of the current turn
    output: int  # of those, still to produce (>= 1)
    api_seconds: float  # predicted API call after the turn (0 = none)
    return_tokens: int  # tokens that call returns


class RequestTable:
    """Slot allocator plus NumPy score columns indexed by slot (zero-copy input of score_batch)."""

    def __init__(self, capacity: int = 256) -> None:
        self._states: dict[str, RequestState] = {}
        self._free: list[int] = []
        self._next_slot = 0
        self._alloc(max(capacity, 1))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "context", None)
        self.capacity = capacity
        new = {
            "context": np.zeros(capacity, np.int64),
            "pending": np.zeros(capacity, np.int64),
            "output": np.zeros(capacity, np.int64),
            "turn": np.zeros(capacity, np.int64),
            "api": np.zeros(capacity, np.float64),
            "ret": np.zeros(capacity, np.int64),
            "where": np.zeros(capacity, np.int8),
            "scores": np.zeros(capacity, np.float64),
        }
        if old is not None:
            n = len(old)
            for name, arr in new.items():
                arr[:n] = getattr(self, name)
        for name, arr in new.items():
            setattr(self, name, arr)
        self.offsets = np.arange(capacity + 1, dtype=np.int64)
        # Every score lets the core choose the strategy of the request's next pause.
        self.undecided = np.full(capacity, -1, np.int8)

    def __len__(self) -> int:
        return len(self._states)

    def get(self, request_id: str) -> RequestState | None:
        """The state of a live request, or None."""
        return self._states.get(request_id)

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
            self.context[s] = self.pending[s] = self.output[s] = self.turn[s] = self.ret[s] = 0
            self.api[s] = 0.0
            self.where[s] = NOT_QUEUED
            self._free.append(s)
        return state

    def set_inputs(self, slot: int, inputs: ScoreInputs) -> None:
        """Record one request's score inputs, for the batch re-scores."""
        self.turn[slot] = inputs.turn
        self.context[slot] = inputs.context
        self.pending[slot] = inputs.pending
        self.output[slot] = inputs.output
        self.api[slot] = inputs.api_seconds
        self.ret[slot] = inputs.return_tokens

    def num_slots(self) -> int:
        """Slots handed out so far (free ones included)."""
        return self._next_slot
