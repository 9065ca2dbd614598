"""Estimates of the live batch that LAMPS' costs depend on, from the steps it has seen.

The scheduler's token budget, iteration time (measured between steps, else the cost model's),
the running requests' decode tokens and the context they hold, the KV blocks allocated per
second, the fraction of a discarded context the prefix cache should still hold when the call
returns, and the host link's backlog of swap copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vllm.v1.request import Request

from lamps._core import BatchState

# Longest gap between two steps still taken as one iteration's duration (idle gaps are not).
MAX_ITERATION_SECONDS = 1.0
# Time constant of the allocation rate's average: it decides which parked KV survives a gap
# of seconds, so it follows the last seconds of load, not the last step (a decode step and a
# prefill step differ a hundredfold). Each step weighs at least ALLOCATION_RATE_MIN_WEIGHT, so
# a burst of short steps moves it within tens of steps. A rising rate counts faster (at least
# ALLOCATION_RATE_RISE_MIN_WEIGHT a step): pinning too early is undone under pressure, a turn
# evicted because the load was seen late is lost.
ALLOCATION_RATE_SECONDS = 5.0
ALLOCATION_RATE_MIN_WEIGHT = 0.05
ALLOCATION_RATE_RISE_MIN_WEIGHT = 0.25


def estimate_cached_tokens(
    context_tokens: int,
    block_size: int,
    free_blocks: int,
    api_seconds: float,
    alloc_blocks_per_second: float,
    prefix_caching: bool,
) -> int:
    """Tokens of a context freed now that the prefix cache should still hold after `api_seconds`.

    vLLM's free-block queue is LRU: allocation takes blocks from its head, and freeing a request
    appends its blocks at the tail in reverse order, so its *last* blocks are evicted first and
    its prefix last. Only the blocks already free (`free_blocks`, all ahead of ours) shield it.
    During the call the engine allocates about `alloc_blocks_per_second * api_seconds` blocks
    (gross: blocks freed later queue behind ours and do not shield it), so of the request's full
    blocks, `free_blocks + own - allocated` survive, clamped to [0, own]. Partial tail blocks
    are never cached. Blocks freed by requests finishing during the call are not counted
    (they queue behind ours), which keeps the estimate on the safe side.
    """
    if not prefix_caching or context_tokens <= 0 or block_size <= 0:
        return 0
    own = context_tokens // block_size
    if not math.isfinite(api_seconds) or not math.isfinite(alloc_blocks_per_second):
        return 0
    allocated = max(alloc_blocks_per_second, 0.0) * max(api_seconds, 0.0)
    surviving = min(max(free_blocks + own - allocated, 0.0), float(own))
    return int(surviving) * block_size


class BatchEstimator:
    """Tracks the engine's steps and turns them into the `BatchState` costs are computed in."""

    def __init__(self, cost: Any, block_size: int, prefix_caching: bool, token_budget: int) -> None:
        self._cost = cost
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.token_budget = token_budget
        self.tokens_per_iteration = 0.0
        self._seconds_per_iteration: float | None = None
        self._tokens_per_second: float | None = None
        self._last_step_at: float | None = None
        self.state = BatchState(token_budget=token_budget)

    def reset_clock(self) -> None:
        """Forget the last step time (the clock was replaced)."""
        self._last_step_at = None

    def step_started(self, now: float) -> None:
        """A step starts at `now`: the gap since the last one measures an iteration, and the
        tokens the last step computed over that gap (idle time included) the allocation rate."""
        if self._last_step_at is not None:
            dt = now - self._last_step_at
            if dt > 0:
                rate = self.tokens_per_iteration / dt
                prev_rate = self._tokens_per_second
                floor = ALLOCATION_RATE_MIN_WEIGHT
                if prev_rate is not None and rate > prev_rate:
                    floor = ALLOCATION_RATE_RISE_MIN_WEIGHT
                weight = max(1.0 - math.exp(-dt / ALLOCATION_RATE_SECONDS), floor)
                self._tokens_per_second = (
                    rate if prev_rate is None else prev_rate + weight * (rate - prev_rate)
                )
            if 0 < dt <= MAX_ITERATION_SECONDS and self.tokens_per_iteration > 0:
                prev = self._seconds_per_iteration
                self._seconds_per_iteration = dt if prev is None else prev + 0.1 * (dt - prev)
        self._last_step_at = now

    def step_scheduled(self, total_tokens: int) -> None:
        """The step just scheduled `total_tokens` tokens."""
        self.tokens_per_iteration = float(total_tokens)

    def iteration_seconds(self) -> float:
        """Seconds per engine iteration: measured, else the cost model's."""
        if self._seconds_per_iteration is not None:
            return self._seconds_per_iteration
        return float(self._cost.iteration_seconds(self.tokens_per_iteration))

    def alloc_blocks_per_second(self) -> float:
        """KV blocks the engine allocates per second: the average over the last seconds,
        before any is measured the last step's tokens over an iteration."""
        if self._tokens_per_second is not None:
            return self._tokens_per_second / self.block_size
        return self.tokens_per_iteration / self.block_size / max(self.iteration_seconds(), 1e-9)

    def cached_tokens(self, context_tokens: int, free_blocks: int, api_seconds: float) -> int:
        """Of a context released now, tokens the prefix cache should hold after the call."""
        return estimate_cached_tokens(
            context_tokens, self.block_size, free_blocks, api_seconds,
            self.alloc_blocks_per_second(), self.prefix_caching,
        )  # fmt: skip

    def refresh(
        self,
        running: Sequence[Request],
        free_blocks: int,
        typical_api_seconds: float,
        link_backlog_tokens: tuple[int, int] = (0, 0),
    ) -> BatchState:
        """Rebuild the batch state from the running requests; returns it.

        Only the running requests' decodes count as their per-iteration tokens: a prefill
        chunk is transient, and counting it would leave a rebuild no spare budget whenever a
        long prompt is being prefilled.
        """
        n = len(running)
        held = 0
        decodes = 0
        for r in running:
            computed = r.num_computed_tokens
            held += computed
            decodes += r.num_tokens - computed <= 1
        fraction = 0.0
        if self.prefix_caching and n:
            mean_context = held // n
            if mean_context >= self.block_size:
                cached = self.cached_tokens(mean_context, free_blocks, typical_api_seconds)
                fraction = cached / mean_context
        out_tokens, in_tokens = link_backlog_tokens
        self.state = BatchState(
            token_budget=self.token_budget,
            running_tokens_per_iteration=float(decodes),
            running_context_tokens=float(held),
            prefix_cache_hit_fraction=fraction,
            iteration_seconds=self._seconds_per_iteration or 0.0,
            swap_queue_seconds=float(self._cost.swap_seconds(out_tokens + in_tokens)),
        )
        return self.state
