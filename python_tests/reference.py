"""Pure-Python reference of the core's formulas, written from LAMPS-notes, for property tests.

Deliberately naive (loops instead of closed forms where possible) so that it is an independent
check of the C++ closed forms rather than a transliteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Coefficients of the iteration-time model."""

    a_ms: float
    c_ms: float
    kv_bytes: float
    link: float
    pair_ms: float = 0.0
    kv_read_ms: float = 0.0

    def t_fwd(self, tokens: float) -> float:
        """Seconds of the linear part of an iteration over `tokens` tokens."""
        return (self.a_ms * tokens + self.c_ms) / 1000.0

    def t_swap(self, tokens: float) -> float:
        """Seconds to move `tokens` one way."""
        return tokens * self.kv_bytes / self.link


@dataclass(frozen=True)
class Batch:
    """The engine's token budget and its running batch."""

    budget: float = 2048.0
    run_tokens: float = 0.0
    context: float = 0.0
    hit_fraction: float = 0.0
    iteration: float = 0.0
    swap_queue: float = 0.0


def rebuild_area(held: float, compute: float, batch: Batch, cost: Cost) -> float:
    """Iterate chunk by chunk: each iteration holds what is rebuilt so far plus `held`, for the
    budget's linear time, the batch's KV reads and the chunk's own attention."""
    if compute <= 0:
        return 0.0
    spare = max(batch.budget - batch.run_tokens, 1.0)
    base = cost.t_fwd(batch.budget) + cost.kv_read_ms / 1000.0 * batch.context
    area, built = 0.0, 0.0
    while built < compute:
        chunk = min(spare, compute - built)
        pairs = chunk * (held + built + chunk / 2)
        built += chunk
        area += (held + built) * (base + cost.pair_ms / 1000.0 * pairs)
    return area


def preserve(context: float, cached: float, api: float, batch: Batch, cost: Cost) -> float:
    """W_p."""
    return api * context


def discard(context: float, cached: float, api: float, batch: Batch, cost: Cost) -> float:
    """W_d: rebuild of the uncached part plus the slowdown it imposes on the batch."""
    recompute = context - cached
    if recompute <= 0:
        return 0.0
    pairs = recompute * (cached + recompute / 2)
    slowdown = (cost.a_ms * recompute + cost.pair_ms * pairs) / 1000.0 * batch.context
    return rebuild_area(cached, recompute, batch, cost) + slowdown


def swap(context: float, cached: float, api: float, batch: Batch, cost: Cost) -> float:
    """W_s: both copies stall the batch; the context waits behind the queued copies."""
    return 2 * cost.t_swap(context) * (batch.context + context) + batch.swap_queue * context


def choose(
    context: float, cached: float, api: float, batch: Batch, cost: Cost, allow_swap: bool
) -> int:
    """0 preserve, 1 discard, 2 swap: least waste, ties to the lower code."""
    wastes = [f(context, cached, api, batch, cost) for f in (preserve, discard, swap)]
    candidates = wastes if allow_swap else wastes[:2]
    return min(range(len(candidates)), key=lambda i: (candidates[i], i))


def decode_iteration(batch: Batch, cost: Cost) -> float:
    """Seconds of a decode iteration: measured, else the model's."""
    if batch.iteration > 0:
        return batch.iteration
    return cost.t_fwd(batch.run_tokens + 1) + cost.kv_read_ms / 1000.0 * batch.context


def _segment_area(
    context: float,
    segment: tuple[float, float, float, int | None],
    batch: Batch,
    cost: Cost,
    allow_swap: bool,
) -> float:
    """One segment's area from `context`, summing token by token for the decode."""
    output, api, returned, strategy = segment
    iteration = decode_iteration(batch, cost)
    area = 0.0
    # One decode iteration per token, holding the context as it grows (midpoint rule).
    for k in range(int(output)):
        area += (context + k + 0.5) * iteration
    context += output
    if api <= 0 and returned <= 0:
        return area
    if strategy is None:
        strategy = choose(context, context * batch.hit_fraction, api, batch, cost, allow_swap)
    if strategy == 0:
        area += context * api + rebuild_area(context, returned, batch, cost)
    elif strategy == 1:
        cached = context * batch.hit_fraction
        area += rebuild_area(cached, context - cached + returned, batch, cost)
    else:
        area += context * 2 * cost.t_swap(context) + rebuild_area(context, returned, batch, cost)
    return area


def score(
    context: float,
    pending: float,
    segments: list[tuple[float, float, float, int | None]]
    | list[tuple[float, float, float, int | None, float]],
    batch: Batch,
    cost: Cost,
    allow_swap: bool,
) -> float:
    """Memory-over-time area. A segment repeated k times counts k times the area of one at the
    mean context over the k (the core's definition of a repeated segment)."""
    area = rebuild_area(context - pending, pending, batch, cost)
    for entry in segments:
        output, api, returned, strategy = entry[:4]
        repeat = entry[4] if len(entry) > 4 else 1.0  # type: ignore[misc]
        if repeat <= 0:
            continue
        growth = output + (returned if api > 0 or returned > 0 else 0.0)
        middle = context + (repeat - 1) / 2 * growth
        area += repeat * _segment_area(middle, (output, api, returned, strategy), batch, cost,
                                       allow_swap)  # fmt: skip
        context += repeat * growth
    return area


def ranked(
    entries: dict[int, tuple[float, float, int]], promoted: dict[int, tuple[int, float, int]]
) -> list[int]:
    """Queue order: promoted by (since, arrival, seq), then the rest by (score, arrival, seq)."""
    first = sorted(promoted, key=lambda h: promoted[h])
    rest = sorted(entries, key=lambda h: entries[h])
    return first + rest


def is_close(a: float, b: float) -> bool:
    """Relative comparison for sums taken in a different order."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
