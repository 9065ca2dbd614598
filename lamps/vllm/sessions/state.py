"""What LAMPS remembers of an HTTP session: its history and its parked turn.

Used by `lamps.vllm.sessions.parking`, which decides what happens to a parked turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamps._core import Strategy
from lamps.mechanism.hints import Hints
from lamps.vllm.predictors import RunningMean


@dataclass
class ParkedTurn:
    """A finished turn waiting for its session's next request."""

    key: str
    strategy: Strategy
    hashes: list[Any]  # block hashes of its full blocks, a prefix chain
    tokens: int  # tokens in those blocks
    context: int  # tokens of the finished turn's sequence
    parked_at: float
    predicted_gap: float
    tool: str | None
    epoch: int
    pinned: int = 0  # blocks held by the pin (preserve)
    taker: str | None = None  # the session's next request, once it arrived
    blocks: list[Any] = field(default_factory=list)  # the KV blocks it was parked with
    block_keys: list[Any] = field(default_factory=list)  # their prefix-cache keys then

    def intact(self) -> int:
        """Leading blocks still cached as parked (not evicted nor reused since).

        vLLM's free queue is LRU and a freed request's blocks are queued tail first, so the
        turn's blocks are evicted from its end: what is intact is a prefix, and its length is
        found by binary search (O(log n): a 100k-token turn has 6,000 blocks, checked every
        step). A head block freed earlier by another request is evicted first: the first
        block is checked on its own.
        """
        blocks, keys = self.blocks, self.block_keys
        if not blocks or blocks[0].block_hash != keys[0]:
            return 0
        lo, hi = 1, len(blocks)  # the first `lo` blocks are intact
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if blocks[mid - 1].block_hash == keys[mid - 1]:
                lo = mid
            else:
                hi = mid - 1
        return lo


@dataclass
class Session:
    """What LAMPS knows of one session."""

    session_id: str
    turns: int = 0
    first_tool: str | None = None
    last_active: float = 0.0
    live: set[str] = field(default_factory=set)
    parked: ParkedTurn | None = None
    output: RunningMean = field(default_factory=RunningMean)
    gap: RunningMean = field(default_factory=RunningMean)
    returned: RunningMean = field(default_factory=RunningMean)


def as_dict(hints: Hints) -> dict[str, Any]:
    """The hints as keyword arguments."""
    return {name: getattr(hints, name) for name in Hints.__dataclass_fields__}


def matching_prefix(parked: list[Any], hashes: list[Any]) -> int:
    """Leading blocks of `hashes` equal to the parked ones (hashes chain: a prefix match)."""
    n = min(len(parked), len(hashes))
    if n and parked[n - 1] == hashes[n - 1]:
        return n
    matched = 0
    while matched < n and parked[matched] == hashes[matched]:
        matched += 1
    return matched
