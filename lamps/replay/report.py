"""Tables of a replay: per (policy, load) means with 95% intervals over seeds, and knees.

The load axis is the Poisson rate (``qps``) or, for a closed-loop replay, the number of users
(``users``; rows say which). The knee of a policy is its goodput: the highest swept rate whose
P99 TTFT over the steady window stays within the SLO, at that rate and every lower one
(``lamps.replay.stats.knee``); on the users axis, the most users whose per-turn p95 TTFT stays
within it (``lamps.replay.turn_metrics``). It is computed on each seed's sweep (mean and
interval over seeds) and on the mean curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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

USERS_COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    ("ttft_p95", "p95 TTFT s", "{:.3g}", 1.0),
    ("ttft_mean", "TTFT s", "{:.3g}", 1.0),
    ("ttft_p99", "P99 TTFT s", "{:.3g}", 1.0),
    ("turn_latency_mean", "turn s", "{:.3g}", 1.0),
    ("turn_latency_p95", "p95 turn s", "{:.3g}", 1.0),
    ("conversation_latency_mean", "conversation s", "{:.3g}", 1.0),
    ("prefill_tokens_per_turn", "prefill tok/turn", "{:.3g}", 1.0),
    ("prefix_hit_rate", "hit rate", "{:.3f}", 1.0),
    ("kv_loaded_tokens", "loaded tok", "{:.3g}", 1.0),
    ("swap_gb", "swap GB", "{:.3g}", 1.0),
)
"""The table of a closed-loop (``--users``) replay: per-turn metrics over the window."""


@dataclass(frozen=True)
class LoadAxis:
    """What a replay swept: its key in the rows, unit, knee metric and table columns."""

    key: str
    unit: str
    knee_metric: str
    knee_what: str
    columns: tuple[tuple[str, str, str, float], ...]


RATE_AXIS = LoadAxis("qps", "req/s", KNEE_METRIC, "P99 TTFT over the steady window", COLUMNS)
USERS_AXIS = LoadAxis("users", "users", "ttft_p95", "per-turn p95 TTFT", USERS_COLUMNS)


def load_axis(rows: Sequence[dict[str, Any]]) -> LoadAxis:
    """The users axis if the rows are closed-loop runs, else the rate axis."""
    return USERS_AXIS if any(r.get("users") is not None for r in rows) else RATE_AXIS


def _cell(value: Interval, fmt: str, scale: float) -> str:
    if value.n == 0:
        return "-"
    scaled = Interval(value.mean * scale, value.half_width * scale, value.n)
    return scaled.format(fmt)


def aggregated(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, load): every table metric as an Interval over seeds."""
    axis = load_axis(rows)
    return aggregate(rows, tuple(c[0] for c in axis.columns), by=("policy", axis.key))


def _columns(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None
) -> list[tuple[str, str, str, float]]:
    axis = load_axis(rows)
    return [c for c in axis.columns if columns is None or c[0] in columns]


def engine_settings(rows: Sequence[dict[str, Any]], policy: str, load: float, key: str) -> str:
    """What the (policy, load) rows ran with: token budget / max sequences / prefix cache, as
    recorded by the engine (several values joined when seeds differ, which they should not)."""
    ran = [r for r in rows if r["policy"] == policy and r.get(key) == load
           and "skipped" not in r and "token_budget" in r]  # fmt: skip
    seen = sorted({
        f"{r['token_budget']}/{r.get('max_num_seqs', '?')}/"
        + ("on" if r.get("prefix_caching") else "off")
        for r in ran
    })  # fmt: skip
    return ", ".join(seen) or "-"


def format_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Markdown table: one line per (load, policy), mean ± 95% CI half-width over seeds, with
    the engine settings each line ran with (budget/seqs/prefix cache)."""
    cols = _columns(rows, columns)
    key = load_axis(rows).key
    header = [key, "policy", "seeds", "budget/seqs/prefix", *(c[1] for c in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for agg in sorted(aggregated(rows), key=lambda r: (r[key], r["policy"])):
        cells = [f"{agg[key]:g}", agg["policy"], str(len(agg["seeds"])),
                 engine_settings(rows, agg["policy"], agg[key], key)]  # fmt: skip
        cells += [_cell(agg[k], fmt, scale) for k, _, fmt, scale in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain-text version of ``format_markdown`` for a terminal."""
    cols = _columns(rows, columns)
    key = load_axis(rows).key
    header = [key, "policy", "seeds", *(c[1] for c in cols)]
    body = []
    for agg in sorted(aggregated(rows), key=lambda r: (r[key], r["policy"])):
        body.append(
            [f"{agg[key]:g}", agg["policy"], str(len(agg["seeds"]))]
            + [_cell(agg[k], fmt, scale) for k, _, fmt, scale in cols]
        )
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def knees(
    rows: Sequence[dict[str, Any]],
    slo: float = DEFAULT_SLO_TTFT_P99,
    metric: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per policy: the knee of the mean curve, and the knee per seed as an Interval
    (``metric``: default, the load axis's knee metric).

    A seed whose lowest load already misses the SLO counts as knee 0."""
    axis = load_axis(rows)
    metric = metric or axis.knee_metric
    out: dict[str, dict[str, Any]] = {}
    policies = sorted({r["policy"] for r in rows})
    for p in policies:
        prow = [r for r in rows if r["policy"] == p]
        by_seed: dict[int, list[tuple[float, float]]] = {}
        for r in prow:
            by_seed.setdefault(r.get("seed", 0), []).append((r[axis.key], r[metric]))
        per_seed = [knee(points, slo) or 0.0 for points in by_seed.values()]
        by = ("policy", axis.key)
        mean_curve = [(a[axis.key], a[metric].mean) for a in aggregate(prow, [metric], by=by)]
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
    unit = load_axis(rows).unit
    base = [ks[b]["knee"] or 0.0 for b in baselines if b in ks]
    best = max(base) if base else math.nan
    best_name = next((b for b in baselines if b in ks and (ks[b]["knee"] or 0.0) == best), "-")
    lines = [
        f"| policy | knee ({unit}, mean curve) | knee per seed (mean ± 95% CI) "
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
