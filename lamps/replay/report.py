"""Tables of a replay: per (policy, rate) means with 95% intervals over seeds, and knees.

The knee of a policy is its goodput: the highest swept rate whose P99 TTFT over the steady
window stays within the SLO, at that rate and every lower one (``lamps.replay.stats.knee``).
It is computed on each seed's sweep (mean and interval over seeds) and on the mean curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lamps.replay.stats import Interval, aggregate, interval, knee

DEFAULT_SLO_TTFT_P99 = 2.0
"""Seconds. MLPerf Inference's LLM server scenario bounds P99 TTFT at 2 s (Llama-2-70B and
Llama-3.1-8B); a chat user sees nothing before the first token."""

KNEE_METRIC = "steady_ttft_p99"

BASELINES = (
    "vllm",
    "vllm-preserve",
    "infercept",
    "infercept-paper",
    "lamps-authors",
    "continuum",
    "continuum-code",
)
"""The policies LAMPS is compared against (lamps.replay.policies), for knees and targets."""

# (key, header, format, scale)
COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    ("steady_ttft_p99", "P99 TTFT s", "{:.3g}", 1.0),
    ("steady_ttft_mean", "TTFT s", "{:.3g}", 1.0),
    ("steady_e2e_mean", "e2e s", "{:.3g}", 1.0),
    ("steady_normalized_latency_mean", "norm s/tok", "{:.3g}", 1.0),
    ("steady_unfinished", "unfinished", "{:.3g}", 1.0),
    ("e2e_mean", "e2e (completion) s", "{:.3g}", 1.0),
    ("ttft_p99", "P99 TTFT (completion) s", "{:.3g}", 1.0),
    ("kv_usage_mean", "KV used", "{:.2f}", 1.0),
    ("swapped_bytes", "swap GB", "{:.3g}", 1e-9),
)
METRIC_KEYS = tuple(c[0] for c in COLUMNS)


def _cell(value: Interval, fmt: str, scale: float) -> str:
    if value.n == 0:
        return "-"
    scaled = Interval(value.mean * scale, value.half_width * scale, value.n)
    return scaled.format(fmt)


def aggregated(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, qps): every table metric as an Interval over seeds."""
    return aggregate(rows, METRIC_KEYS)


def format_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] = METRIC_KEYS) -> str:
    """Markdown table: one line per (rate, policy), mean ± 95% CI half-width over seeds."""
    cols = [c for c in COLUMNS if c[0] in columns]
    header = ["qps", "policy", "seeds", *(c[1] for c in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for agg in sorted(aggregated(rows), key=lambda r: (r["qps"], r["policy"])):
        cells = [f"{agg['qps']:g}", agg["policy"], str(len(agg["seeds"]))]
        cells += [_cell(agg[k], fmt, scale) for k, _, fmt, scale in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = METRIC_KEYS) -> str:
    """Plain-text version of ``format_markdown`` for a terminal."""
    cols = [c for c in COLUMNS if c[0] in columns]
    header = ["qps", "policy", "seeds", *(c[1] for c in cols)]
    body = []
    for agg in sorted(aggregated(rows), key=lambda r: (r["qps"], r["policy"])):
        body.append(
            [f"{agg['qps']:g}", agg["policy"], str(len(agg["seeds"]))]
            + [_cell(agg[k], fmt, scale) for k, _, fmt, scale in cols]
        )
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def knees(
    rows: Sequence[dict[str, Any]], slo: float = DEFAULT_SLO_TTFT_P99, metric: str = KNEE_METRIC
) -> dict[str, dict[str, Any]]:
    """Per policy: the knee of the mean curve, and the knee per seed as an Interval.

    A seed whose lowest rate already misses the SLO counts as knee 0."""
    out: dict[str, dict[str, Any]] = {}
    policies = sorted({r["policy"] for r in rows})
    for p in policies:
        prow = [r for r in rows if r["policy"] == p]
        by_seed: dict[int, list[tuple[float, float]]] = {}
        for r in prow:
            by_seed.setdefault(r.get("seed", 0), []).append((r["qps"], r[metric]))
        per_seed = [knee(points, slo) or 0.0 for points in by_seed.values()]
        mean_curve = [(a["qps"], a[metric].mean) for a in aggregate(prow, [metric])]
        rates = sorted(q for q, _ in mean_curve)
        k = knee(mean_curve, slo)
        out[p] = {
            "knee": k,
            "knee_per_seed": interval(per_seed),
            "max_rate": rates[-1],
            "censored": k is not None and k == rates[-1],  # still within the SLO at the top
        }
    return out


def format_knees(
    rows: Sequence[dict[str, Any]],
    slo: float = DEFAULT_SLO_TTFT_P99,
    baselines: Sequence[str] = BASELINES,
) -> str:
    """Markdown: each policy's knee, and its ratio to the best baseline's knee."""
    ks = knees(rows, slo)
    base = [ks[b]["knee"] or 0.0 for b in baselines if b in ks]
    best = max(base) if base else math.nan
    best_name = next((b for b in baselines if b in ks and (ks[b]["knee"] or 0.0) == best), "-")
    lines = [
        "| policy | knee (req/s, mean curve) | knee per seed (mean ± 95% CI) "
        f"| vs best baseline ({best_name}) |",
        "|---|---:|---:|---:|",
    ]
    for p, k in sorted(ks.items(), key=lambda kv: -(kv[1]["knee"] or 0.0)):
        value = "below the lowest rate" if k["knee"] is None else f"{k['knee']:g}"
        if k["censored"]:
            value = f">= {value} (the sweep's top)"
        ratio = (k["knee"] or 0.0) / best if best else math.nan
        lines.append(f"| {p} | {value} | {k['knee_per_seed'].format('{:.2f}')} | {ratio:.2f}x |")
    return "\n".join(lines)
