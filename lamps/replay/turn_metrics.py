"""Per-turn metrics of a closed-loop (``--users``) replay, over its measurement window.

The window: a run of ``duration`` virtual seconds (it stops there; the users never run out of
work) measures the turns *sent* in ``[warmup, duration)`` as they stand at ``duration``, the
warm-up (``--warmup``, a fraction of the duration) leaving out the start, where every user
sends its first, uncached input at once. Every turn counts, sub-agents' included, as
kv-cache-tester counts every request:

- ``ttft_*``: time from a turn's request being sent to its first token; a turn with no first
  token by the window's end counts as infinitely late (as the steady-window P99 of
  ``lamps.replay.metrics`` does), so a p95 is finite only while 95% of the turns are served;
- ``turn_latency_*``: sent to last token; a turn still decoding at the end is counted up to it
  (a lower bound);
- ``conversation_latency_mean``: first turn sent to last token of the top-level conversations
  that started in the window and finished by its end (the short ones, that is: the count says
  how many);
- ``prefill_tokens_per_turn``: tokens computed for a turn's input, recomputation included, mean
  over the window's turns that had their first token; ``prefix_hit_rate``: of those turns'
  input tokens, the fraction found in the GPU's prefix cache (or held by the turn's paused
  session); ``kv_loaded_tokens``: input tokens a KV connector loaded from the host instead of
  recomputing them (vLLM's own count, which a new request reports: every stateless turn, the
  first turn of a session), and ``swap_in_tokens`` (added by the runner): KV tokens the LAMPS
  swap worker copied back from the host over the whole run, a paused session's included;
- ``swap_gb``: KV bytes copied between GPU and host, both ways, over the whole run.

The knee on this axis is the most users whose per-turn p95 TTFT stays within the SLO (2 s, as
kv-cache-tester measures a deployment), at that count and every lower one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from lamps.replay.records import RequestRecord, TurnRecord

USERS_KNEE_METRIC = "ttft_p95"


def _pct(values: np.ndarray, q: float) -> float:
    if not values.size:
        return math.nan
    method: Literal["higher", "linear"] = "higher" if np.isinf(values).any() else "linear"
    return float(np.percentile(values, q, method=method))


def _window_turns(records: Sequence[RequestRecord], start: float, end: float) -> list[TurnRecord]:
    return [t for r in records for t in r.turns if start <= t.sent < end]


def turn_metrics(
    records: Sequence[RequestRecord],
    *,
    start: float,
    end: float,
    top_level: set[int],
    swapped_bytes: float,
) -> dict[str, Any]:
    """The window's per-turn metrics (see the module docstring); ``top_level``: the arrival
    indices of conversations that are not sub-agents."""
    turns = _window_turns(records, start, end)
    first = [
        t.first_token if t.first_token is not None and t.first_token <= end else None for t in turns
    ]
    ttft = np.array(
        [math.inf if f is None else f - t.sent for f, t in zip(first, turns, strict=True)]
    )
    served = [t for f, t in zip(first, turns, strict=True) if f is not None]
    latency = np.array(
        [(t.finish if t.finish is not None and t.finish <= end else end) - t.sent for t in turns]
    )
    inputs = sum(t.input_tokens for t in served)
    loaded = sum(t.loaded for t in served)
    cached = sum(_cached(t) for t in served)
    convs = [
        r.finish_time - r.arrival.time
        for r in records
        if r.arrival.index in top_level
        and start <= r.arrival.time
        and r.finish_time is not None
        and r.finish_time <= end
    ]
    return {
        "turns": len(turns),
        "turns_served": len(served),
        "ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
        "ttft_p50": _pct(ttft, 50),
        "ttft_p95": _pct(ttft, 95),
        "ttft_p99": _pct(ttft, 99),
        "turn_latency_mean": float(latency.mean()) if latency.size else math.nan,
        "turn_latency_p95": _pct(latency, 95),
        "conversation_latency_mean": float(np.mean(convs)) if convs else math.nan,
        "conversations_finished": len(convs),
        "prefill_tokens_per_turn": float(np.mean([t.computed for t in served]))
        if served
        else math.nan,
        "input_tokens_per_turn": inputs / len(served) if served else math.nan,
        "prefix_hit_rate": cached / inputs if inputs else math.nan,
        "kv_loaded_tokens": int(loaded),
        "swap_gb": swapped_bytes / 1e9,
        "window_start": start,
        "window_end": end,
    }


def _cached(turn: TurnRecord) -> int:
    """Input tokens found cached: vLLM's count when the request reported one, else those the
    turn did not compute or load (a resumed session's held context)."""
    if turn.cached is not None:
        return turn.cached
    return max(0, turn.input_tokens - turn.computed - turn.loaded)
