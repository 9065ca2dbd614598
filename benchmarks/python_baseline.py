"""Pure-Python versions of the core's hot paths: the baselines the benchmarks compare against.

Written to be as fast as straightforward Python gets (closed forms, local names, no per-token
loops), so the reported speed-ups are against a fair alternative, not a strawman.
"""

from __future__ import annotations

import math


def _rebuild_area(held: float, compute: float, spare: float, t_sat: float) -> float:
    if compute <= 0:
        return 0.0
    full = math.ceil(compute / spare) - 1
    return t_sat * (spare * full * (full + 1) / 2 + compute + held * (full + 1))


def score(
    context: float,
    pending: float,
    segments: list[tuple[int, float, int]],
    run_tokens: float,
    run_context: float,
    hit: float,
    a_ms: float,
    c_ms: float,
    kv_bytes: float,
    link: float,
    saturation: int,
) -> float:
    """The LAMPS memory-over-time score with the strategy chosen per API call."""
    spare = max(saturation - run_tokens, 1.0)
    t_sat = (a_ms * saturation + c_ms) / 1000.0
    iteration = (a_ms * (run_tokens + 1) + c_ms) / 1000.0
    per_token = a_ms / 1000.0
    area = _rebuild_area(context - pending, pending, spare, t_sat)
    for output, api, returned in segments:
        area += (context + output / 2) * output * iteration
        context += output
        if api <= 0 and returned <= 0:
            continue
        cached = context * hit
        preserve = api * context
        discard = (
            _rebuild_area(cached, context - cached, spare, t_sat)
            + per_token * (context - cached) * run_context
        )
        swap_one_way = context * kv_bytes / link
        swap = 2 * swap_one_way * (run_context + context)
        if preserve <= discard and preserve <= swap:
            area += context * api + _rebuild_area(context, returned, spare, t_sat)
        elif discard <= swap:
            area += _rebuild_area(cached, context - cached + returned, spare, t_sat)
        else:
            area += context * 2 * swap_one_way + _rebuild_area(context, returned, spare, t_sat)
        context += returned
    return area
