"""Per-(policy, rate, seed) metrics of a replay: run-to-completion and steady-window views.

Run to completion: every arrival of the run, latency until it finished (a run stopped at its
drain limit counts the unfinished ones as ``unfinished``, their latencies up to the stop).
Window (as the papers' driver reports): every request that finished by the window's end,
with the finished count. Steady window: arrivals in ``[warmup, cutoff)`` seen at the
window's end ``window_end``: what finished by then, how many did not, P99 TTFT with a request
that had no first token by then counted as infinitely late, and the driver's normalized
latency ``(e2e - API time) / output tokens`` over every request that had produced a token
(an unfinished one measured up to the window's end, on the tokens it had produced).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lamps.replay.records import RequestRecord, RunResult

REQUIRED_KEYS = (
    "policy",
    "qps",
    "num_requests",
    "e2e_mean",
    "e2e_p50",
    "e2e_p99",
    "ttft_mean",
    "ttft_p99",
    "normalized_latency_mean",
    "throughput",
)
"""Keys every results.json entry carries (more follow, see ``summarize``)."""


@dataclass(frozen=True)
class SteadyWindow:
    """Arrivals in ``[warmup, cutoff)`` are measured as seen at ``end`` (virtual seconds)."""

    warmup: float
    cutoff: float
    end: float

    def __post_init__(self) -> None:
        if not (0 <= self.warmup < self.cutoff <= self.end):
            raise ValueError(
                f"steady window: need 0 <= warmup < cutoff <= end, got {self.warmup}, "
                f"{self.cutoff}, {self.end}"
            )

    @classmethod
    def for_duration(
        cls, duration: float, warmup: float = 0.1, cutoff: float = 0.8
    ) -> SteadyWindow:
        """Warm-up and cut-off as fractions of an arrival window of ``duration`` seconds."""
        return cls(warmup * duration, cutoff * duration, duration)


def _pct(values: np.ndarray, q: float) -> float:
    """Percentile; with infinite values (never served) the next higher sample, not nan."""
    if not values.size:
        return math.nan
    method: Literal["higher", "linear"] = "higher" if np.isinf(values).any() else "linear"
    return float(np.percentile(values, q, method=method))


def recomputed_tokens(rec: RequestRecord) -> int:
    """Tokens computed more than once: every context token but the last needs one pass."""
    return max(0, rec.scheduled_tokens - (rec.arrival.request.final_context_tokens - 1))


def window_metrics(records: Sequence[RequestRecord], end: float) -> dict[str, Any]:
    """The papers' driver's view (keys prefixed ``window_``): the run stops at the window's
    ``end`` and every mean covers what finished by then, whenever it arrived; the finished
    count says how much of the load that is."""
    done = [r for r in records if r.finish_time is not None and r.finish_time <= end]
    e2e = np.array([r.finish_time - r.arrival.time for r in done])  # type: ignore[operator]
    ttft = np.array([r.first_token_time - r.arrival.time for r in done])  # type: ignore[operator]
    arrived = sum(1 for r in records if r.arrival.time < end)
    return {
        "window_arrived": arrived,
        "window_finished": len(done),
        "window_e2e_mean": float(e2e.mean()) if e2e.size else math.nan,
        "window_e2e_p99": _pct(e2e, 99),
        "window_ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
        "window_ttft_p99": _pct(ttft, 99),
        "window_normalized_latency_mean": float(
            np.mean((e2e - [r.api_seconds for r in done]) / [max(r.output_tokens, 1) for r in done])
        )
        if done
        else math.nan,
    }


def steady_metrics(records: Sequence[RequestRecord], window: SteadyWindow) -> dict[str, Any]:
    """The steady-window view (keys prefixed ``steady_``)."""
    end = window.end
    recs = [r for r in records if window.warmup <= r.arrival.time < window.cutoff]
    done = [r for r in recs if r.finish_time is not None and r.finish_time <= end]
    ttft = np.array(
        [
            r.first_token_time - r.arrival.time
            if r.first_token_time is not None and r.first_token_time <= end
            else math.inf
            for r in recs
        ]
    )
    e2e = np.array([r.finish_time - r.arrival.time for r in done])  # type: ignore[operator]
    api_done = np.array([r.api_seconds for r in done])
    norm = []
    for r in recs:
        tokens = r.tokens_at_window if r.tokens_at_window is not None else r.output_tokens
        if r.first_token_time is None or r.first_token_time > end or tokens <= 0:
            continue
        stop = min(r.finish_time, end) if r.finish_time is not None else end
        norm.append((stop - r.arrival.time - r.api_seconds_until(stop)) / tokens)
    span = window.cutoff - window.warmup
    return {
        "steady_requests": len(recs),
        "steady_finished": len(done),
        "steady_unfinished": len(recs) - len(done),
        "steady_no_first_token": int(np.isinf(ttft).sum()),
        "steady_e2e_mean": float(e2e.mean()) if e2e.size else math.nan,
        "steady_e2e_p99": _pct(e2e, 99),
        "steady_ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
        "steady_ttft_p50": _pct(ttft, 50),
        "steady_ttft_p99": _pct(ttft, 99),
        "steady_normalized_latency_mean": float(np.mean(norm)) if norm else math.nan,
        "steady_normalized_latency_finished": float(
            np.mean((e2e - api_done) / [r.output_tokens for r in done])
        )
        if done
        else math.nan,
        "steady_goodput": len(done) / span,
        "steady_warmup": window.warmup,
        "steady_cutoff": window.cutoff,
        "steady_end": window.end,
    }


def summarize(
    result: RunResult,
    qps: float,
    *,
    kv_bytes_per_token: float,
    window: SteadyWindow | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of one run; latencies in seconds, normalized latency in seconds per token."""
    recs = result.records
    end_of_run = result.virtual_seconds
    finished = [r for r in recs if r.finished]
    arrival = np.array([r.arrival.time for r in recs])
    finish = np.array([r.finish_time if r.finished else end_of_run for r in recs], dtype=float)
    first = np.array(
        [r.first_token_time if r.first_token_time is not None else end_of_run for r in recs],
        dtype=float,
    )
    api = np.array([r.api_seconds for r in recs])
    out_tokens = np.array([max(r.output_tokens, 1) for r in recs], dtype=float)
    service = np.array([r.service_seconds for r in recs])
    e2e = finish - arrival
    ttft = first - arrival
    normalized = (e2e - api) / out_tokens
    queueing = e2e - api - service
    makespan = float(finish.max() - arrival.min())
    stats = dict(result.policy_stats)
    swapped_bytes = float(stats.get("swapped_bytes", 0.0))
    usage = np.array([u for _, u in result.kv_usage]) if result.kv_usage else np.zeros(1)
    row: dict[str, Any] = {
        "policy": result.policy,
        "qps": qps,
        "num_requests": len(recs),
        "unfinished": len(recs) - len(finished),
        "e2e_mean": float(e2e.mean()),
        "e2e_p50": _pct(e2e, 50),
        "e2e_p99": _pct(e2e, 99),
        "ttft_mean": float(ttft.mean()),
        "ttft_p50": _pct(ttft, 50),
        "ttft_p99": _pct(ttft, 99),
        "normalized_latency_mean": float(normalized.mean()),
        "normalized_latency_p99": _pct(normalized, 99),
        "throughput": len(finished) / makespan,
        "throughput_tokens": float(out_tokens.sum()) / makespan,
        "queueing_mean": float(queueing.mean()),
        "queueing_p99": _pct(queueing, 99),
        "api_seconds_mean": float(api.mean()),
        "preemptions": int(sum(r.preemptions for r in recs)),
        "recomputed_tokens": int(sum(recomputed_tokens(r) for r in recs)),
        "swapped_bytes": swapped_bytes,
        "kv_usage_mean": float(usage.mean()),
        "kv_usage_max": float(usage.max()),
        "kv_usage": [[round(t, 3), round(u, 4)] for t, u in result.kv_usage],
        "iterations": result.iterations,
        "virtual_seconds": result.virtual_seconds,
        "wall_seconds": result.wall_seconds,
        "policy_stats": stats,
        "engine_stats": dict(result.engine_stats),
        "kv_bytes_per_token": kv_bytes_per_token,
        **result.settings,
    }
    if window is not None:
        row.update(steady_metrics(recs, window))
        row.update(window_metrics(recs, window.end))
    if extra:
        row.update(extra)
    return row


def compact(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the KV-usage time series kept for the lowest seed only (file size)."""
    seeds = [r.get("seed", 0) for r in rows]
    first = min(seeds) if seeds else 0
    return [
        r if r.get("seed", 0) == first else {k: v for k, v in r.items() if k != "kv_usage"}
        for r in rows
    ]


def write_results(rows: Sequence[dict[str, Any]], out_dir: Path, **header: Any) -> Path:
    """Writes DIR/results.json: ``{"provenance": ..., ..., "rows": [...]}`` (``compact``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps({**header, "rows": compact(rows)}, indent=1) + "\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.json (this layout, or the older bare list)."""
    data = json.loads(path.read_text())
    return list(data["rows"] if isinstance(data, dict) else data)
