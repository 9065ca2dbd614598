"""Per-(policy, rate) metrics of a replay, the comparison table and results.json."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lamps.replay.engine import RequestRecord, RunResult

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


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def recomputed_tokens(rec: RequestRecord) -> int:
    """Tokens computed more than once: every context token but the last needs one pass."""
    return rec.scheduled_tokens - (rec.arrival.request.final_context_tokens - 1)


def summarize(
    result: RunResult, qps: float, *, kv_bytes_per_token: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Metrics of one run; latencies in seconds, normalized latency in seconds per token."""
    recs = result.records
    unfinished = [r.arrival.request_id for r in recs if not r.finished]
    if unfinished:
        raise ValueError(f"{result.policy} @ {qps}: unfinished requests {unfinished[:5]}")
    arrival = np.array([r.arrival.time for r in recs])
    finish = np.array([r.finish_time for r in recs], dtype=float)
    first = np.array([r.first_token_time for r in recs], dtype=float)
    api = np.array([r.api_seconds for r in recs])
    out_tokens = np.array([r.output_tokens for r in recs], dtype=float)
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
        "e2e_mean": float(e2e.mean()),
        "e2e_p50": _pct(e2e, 50),
        "e2e_p99": _pct(e2e, 99),
        "ttft_mean": float(ttft.mean()),
        "ttft_p50": _pct(ttft, 50),
        "ttft_p99": _pct(ttft, 99),
        "normalized_latency_mean": float(normalized.mean()),
        "normalized_latency_p99": _pct(normalized, 99),
        "throughput": len(recs) / makespan,
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
        "kv_bytes_per_token": kv_bytes_per_token,
    }
    if extra:
        row.update(extra)
    return row


def write_results(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Writes DIR/results.json (a list of per-(policy, qps) objects)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(list(rows), indent=1) + "\n")
    return path


_COLUMNS = (
    ("policy", "policy", "{}"),
    ("qps", "qps", "{:g}"),
    ("num_requests", "reqs", "{}"),
    ("e2e_mean", "e2e mean", "{:.2f}"),
    ("e2e_p50", "e2e p50", "{:.2f}"),
    ("e2e_p99", "e2e p99", "{:.2f}"),
    ("ttft_mean", "ttft mean", "{:.3f}"),
    ("ttft_p99", "ttft p99", "{:.2f}"),
    ("normalized_latency_mean", "norm s/tok", "{:.4f}"),
    ("throughput", "req/s", "{:.3f}"),
    ("throughput_tokens", "tok/s", "{:.0f}"),
    ("queueing_mean", "queue mean", "{:.2f}"),
    ("preemptions", "preempt", "{}"),
    ("recomputed_tokens", "recomputed", "{}"),
    ("swapped_bytes", "swap GB", "{:.1f}"),
    ("kv_usage_mean", "kv mean", "{:.2f}"),
)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row[key]
    if value is None:
        return "-"
    return fmt.format(value / 1e9 if key == "swapped_bytes" else value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text comparison table (seconds unless noted), rows grouped by rate."""
    header = [c[1] for c in _COLUMNS]
    body = []
    for row in sorted(rows, key=lambda r: (r["qps"], r["policy"])):
        body.append([_cell(row, key, fmt) for key, _, fmt in _COLUMNS])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table in Markdown (for the README)."""
    header = [c[1] for c in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: (r["qps"], r["policy"])):
        lines.append("| " + " | ".join(_cell(row, key, fmt) for key, _, fmt in _COLUMNS) + " |")
    return "\n".join(lines)
