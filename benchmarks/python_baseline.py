"""Pure-Python versions of the core's hot paths: the baselines the benchmarks compare against.

Written to be as fast as straightforward Python gets (closed forms, local names, no per-token
loops), so the reported speed-ups are against a fair alternative, not a strawman.
"""

from __future__ import annotations

import math


def _rebuild_area(held: float, compute: float, spare: float, t0: float, pair_s: float) -> float:
    if compute <= 0:
        return 0.0
    full = math.ceil(compute / spare) - 1
    last = compute - full * spare
    sum_j = full * (full + 1) / 2
    sum_j2 = full * (full + 1) * (2 * full + 1) / 6
    linear = t0 * (spare * sum_j + compute + held * (full + 1))
    attention = pair_s * (
        spare
        * (
            full * held * (held - spare / 2)
            + spare * (2 * held - spare / 2) * sum_j
            + spare * spare * sum_j2
        )
        + (held + compute) * last * (held + full * spare + last / 2)
    )
    return linear + attention


def score(
    context: float,
    pending: float,
    segments: list[tuple[int, float, int]],
    budget: float,
    run_tokens: float,
    run_context: float,
    hit: float,
    a_ms: float,
    c_ms: float,
    kv_bytes: float,
    link: float,
    pair_ms: float,
    kv_read_ms: float,
) -> float:
    """The LAMPS memory-over-time score with the strategy chosen per API call."""
    spare = max(budget - run_tokens, 1.0)
    reads = kv_read_ms / 1000.0 * run_context
    t0 = (a_ms * budget + c_ms) / 1000.0 + reads
    iteration = (a_ms * (run_tokens + 1) + c_ms) / 1000.0 + reads
    per_token = a_ms / 1000.0
    pair_s = pair_ms / 1000.0
    area = _rebuild_area(context - pending, pending, spare, t0, pair_s)
    for output, api, returned in segments:
        area += (context + output / 2) * output * iteration
        context += output
        if api <= 0 and returned <= 0:
            continue
        cached = context * hit
        preserve = api * context
        lost = context - cached
        discard = (
            _rebuild_area(cached, lost, spare, t0, pair_s)
            + (per_token * lost + pair_s * lost * (cached + lost / 2)) * run_context
        )
        swap_one_way = context * kv_bytes / link
        swap = 2 * swap_one_way * (run_context + context)
        if preserve <= discard and preserve <= swap:
            area += context * api + _rebuild_area(context, returned, spare, t0, pair_s)
        elif discard <= swap:
            area += _rebuild_area(cached, lost + returned, spare, t0, pair_s)
        else:
            area += context * 2 * swap_one_way + _rebuild_area(context, returned, spare, t0, pair_s)
        context += returned
    return area
