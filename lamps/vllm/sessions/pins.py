"""Pins of parked session turns: kept under the parked-memory bound, given back by least waste.

`SessionPins` is the part of `lamps.vllm.sessions.SessionParking` that pins a parked turn's KV
blocks (`KvPauses.pin`), re-checks them at their deadlines, pins again a discarded turn once
keeping it is the least waste, and gives pins back (to the memory bound, to KV pressure, or all
of them before a prefix-cache reset), the one whose pin wastes most first.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal

from lamps._core import PausedRequest, Strategy, discard_waste
from lamps.mechanism.pausing import KvPauses
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.counters import LampsStats
from lamps.vllm.sessions.state import ParkedTurn, Session


class SessionPins:
    """Pins, re-checks and gives back the KV blocks of parked session turns."""

    # Set by `SessionParking.__init__`.
    _pauses: KvPauses
    _batch: BatchEstimator
    _cost: Any
    _cfg: Any
    _stats: LampsStats
    _block_size: int
    _max_parked_blocks: int
    _sessions: OrderedDict[str, Session]
    _deadlines: list[tuple[float, int, str, int]]
    _seq: itertools.count[int]
    _pinned_blocks: int
    _in_cache: dict[str, ParkedTurn]

    if TYPE_CHECKING:

        def _decide(self, tokens: int, gap: float) -> Strategy: ...

    def release_for_pressure(self, now: float) -> bool:
        """Give back the pinned turn whose pin wastes most; False when none is pinned."""
        return self._release_costliest(now, "pressure_releases")

    def release_all_pins(self) -> int:
        """Give back every pinned turn (they stay parked, in the prefix cache); returns them."""
        released = 0
        for sid, session in self._sessions.items():
            parked = session.parked
            if parked is not None and parked.strategy == Strategy.PRESERVE:
                self._unpin(parked, Strategy.DISCARD)
                self._in_cache[sid] = parked
                released += 1
        return released

    def pinned_token_seconds(self, now: float) -> float:
        """KV memory over time the pinned turns are expected to hold: tokens x rest of gap."""
        total = 0.0
        for session in self._sessions.values():
            parked = session.parked
            if parked is not None and parked.pinned:
                elapsed = max(now - parked.parked_at, 0.0)
                # An overrun gap is expected to last about as long again, as re-decisions do.
                rest = max(parked.predicted_gap - elapsed, elapsed)
                total += parked.pinned * self._block_size * rest
        return total

    def _pin(self, sid: str, parked: ParkedTurn, num_blocks: int, now: float, gap: float) -> None:
        self._pauses.pin(parked.key, parked.blocks[:num_blocks])
        parked.strategy = Strategy.PRESERVE
        parked.pinned = num_blocks
        self._pinned_blocks += num_blocks
        self._in_cache.pop(sid, None)
        self._recheck(sid, parked, now, gap)

    def _revisit_cached(self, now: float) -> None:
        """Pin again turns left to the prefix cache once keeping them is the least waste.

        The choice at parking time saw the batch of that moment; when the load changes during
        the gap (other requests start allocating), what is still cached of a discarded turn
        is worth keeping. Turns older than the pin cap, or fully evicted, are no candidates.
        """
        for sid, parked in list(self._in_cache.items()):
            elapsed = now - parked.parked_at
            intact = parked.intact() if parked.taker is None else 0
            if intact == 0 or elapsed >= self._cfg.session_max_pin_s:
                del self._in_cache[sid]
                continue
            remaining = max(parked.predicted_gap - elapsed, elapsed)
            if self._decide(intact * self._block_size, remaining) != Strategy.PRESERVE:
                continue
            if not self._make_room(intact, now):
                continue
            self._stats.session_redecided += 1
            self._pin(sid, parked, intact, now, remaining)

    def _make_room(self, num_blocks: int, now: float) -> bool:
        """Whether `num_blocks` more pinned blocks fit the bound (releasing others if needed)."""
        if num_blocks > self._max_parked_blocks:
            return False
        while self._pinned_blocks + num_blocks > self._max_parked_blocks:
            if not self._release_costliest(now, "cap_releases"):
                return False
        return True

    def _recheck(self, sid: str, parked: ParkedTurn, now: float, after: float) -> None:
        deadline = now + max(after, self._batch.iteration_seconds())
        deadline = min(deadline, parked.parked_at + self._cfg.session_max_pin_s)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), sid, parked.epoch))

    def _release_costliest(
        self, now: float, counter: Literal["pressure_releases", "cap_releases"]
    ) -> bool:
        """Give back the costliest pin, counted in stat `counter`; False when none is pinned."""
        victim = self._costliest_pin(now)
        if victim is None:
            return False
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        self._unpin(victim, Strategy.DISCARD)
        return True

    def _costliest_pin(self, now: float) -> ParkedTurn | None:
        """The pinned turn whose pin wastes most against discarding it (takers last)."""
        best: ParkedTurn | None = None
        best_key: tuple[bool, float] | None = None
        for session in self._sessions.values():
            parked = session.parked
            if parked is None or parked.strategy != Strategy.PRESERVE:
                continue
            elapsed = max(now - parked.parked_at, 0.0)
            remaining = max(parked.predicted_gap - elapsed, elapsed, 1e-3)
            keep = remaining * parked.tokens
            drop = discard_waste(
                PausedRequest(float(parked.tokens), 0.0, remaining), self._batch.state, self._cost
            )
            key = (parked.taker is None, keep - drop)
            if best_key is None or key > best_key:
                best, best_key = parked, key
        return best

    def _unpin(self, parked: ParkedTurn, strategy: Strategy) -> None:
        released = self._pauses.unpin(parked.key)
        self._pinned_blocks -= released
        parked.pinned = 0
        parked.strategy = strategy
        parked.epoch = next(self._seq)  # its pending deadlines are void
