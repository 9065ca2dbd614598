"""PNG plots of a replay's results (matplotlib, Agg backend): means with 95% intervals.

``lamps replay`` draws them after its runs; ``lamps plot DIR`` draws them again from
``DIR/results.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lamps.replay.report import load_axis
from lamps.replay.stats import aggregate

PANELS = (
    ("steady_ttft_p99", "P99 TTFT, steady window (s)"),
    ("steady_e2e_mean", "mean end-to-end latency, steady window (s)"),
    ("steady_normalized_latency_mean", "normalized latency (s/token)"),
    ("e2e_mean", "mean end-to-end latency, run to completion (s)"),
)
USERS_PANELS = (
    ("ttft_p95", "p95 TTFT per turn, window (s)"),
    ("ttft_mean", "mean TTFT per turn, window (s)"),
    ("turn_latency_mean", "mean turn latency, window (s)"),
    ("prefill_tokens_per_turn", "prefill tokens computed per turn"),
)


def _finite(x: float, cap: float) -> float:
    return cap if math.isinf(x) or math.isnan(x) else x


def _bounds(value: Any, cap: float, floor: float) -> tuple[float, float, float]:
    """(mean, low, high) drawable: infinite at the cap, no interval (one seed) as none."""
    mean = _finite(value.mean, cap)
    low = mean if math.isnan(value.low) else max(_finite(value.low, cap), floor)
    high = mean if math.isnan(value.high) else _finite(value.high, cap)
    return mean, min(low, mean), max(high, mean)


def _log_scale(values: Sequence[float]) -> bool:
    """A log axis only where the values span more than LINEAR_SPAN times (or reach 0)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return False
    return max(positive) / min(positive) > LINEAR_SPAN


LINEAR_SPAN = 20.0
"""Largest max/min ratio of a panel's values still drawn on a linear axis."""


def plot_latency(
    rows: Sequence[dict[str, Any]], path: Path, *, slo: float | None = None, banner: str = ""
) -> Path:
    """Each panel: a metric against the load, one line per policy, 95% intervals as bands; with
    one load only, a bar per policy with its interval.

    An infinite value (a tail latency with requests never served) is drawn at the top. Linear
    axes unless the values span more than LINEAR_SPAN times. Closed-loop rows (``users``) are
    drawn against the number of users, per-turn metrics."""
    axis = load_axis(rows)
    panels = USERS_PANELS if axis.key == "users" else PANELS
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.9))
    aggs = aggregate(rows, [k for k, _ in panels], by=("policy", axis.key))
    policies = sorted({a["policy"] for a in aggs})
    loads = sorted({a[axis.key] for a in aggs})
    for ax, (key, label) in zip(axes, panels, strict=True):
        finite = [a[key].mean for a in aggs if math.isfinite(a[key].mean)]
        cap = max(finite) * 1.5 if finite else 1.0
        log = _log_scale(finite)
        floor = min((v for v in finite if v > 0), default=1.0) / 2 if log else 0.0
        if len(loads) == 1:
            by_policy = {a["policy"]: _bounds(a[key], cap, floor) for a in aggs}
            means = [by_policy[p][0] for p in policies]
            pairs = list(zip(policies, means, strict=True))
            errors = [
                [m - by_policy[p][1] for p, m in pairs],
                [by_policy[p][2] - m for p, m in pairs],
            ]
            colors = [f"C{i}" for i in range(len(policies))]
            ax.bar(policies, means, yerr=errors, color=colors, capsize=3)
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.set_xlabel(f"{loads[0]:g} {'users' if axis.key == 'users' else 'requests/s'}")
        else:
            for policy in policies:
                group = sorted(
                    (a for a in aggs if a["policy"] == policy), key=lambda a: a[axis.key]
                )
                x = [a[axis.key] for a in group]
                y, lo, hi = (list(v) for v in zip(*(_bounds(a[key], cap, floor) for a in group),
                                                   strict=True))  # fmt: skip
                (line,) = ax.plot(x, y, marker="o", ms=3, label=policy)
                ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
            ax.set_xlabel("users" if axis.key == "users" else "arrival rate (requests/s)")
        if slo is not None and key == axis.knee_metric:
            ax.axhline(slo, color="k", ls="--", lw=1, label=f"SLO {slo:g} s")
        ax.set_ylabel(label, fontsize=8)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    if len(loads) > 1 or slo is not None:
        axes[0].legend(fontsize=7)
    if banner:
        fig.suptitle(banner, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_kv_usage(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """KV-cache usage over virtual time (first seed), one panel per load, a line per policy."""
    key = load_axis(rows).key
    rows = [r for r in rows if "kv_usage" in r]  # skipped rates and later seeds have none
    rates = sorted({r[key] for r in rows})
    seed = min((r.get("seed", 0) for r in rows), default=0)
    fig, axes = plt.subplots(
        1, max(len(rates), 1), figsize=(4.2 * max(len(rates), 1), 3.4), squeeze=False
    )
    for ax, qps in zip(axes[0], rates, strict=True):
        for row in (r for r in rows if r[key] == qps and r.get("seed", 0) == seed):
            series = row["kv_usage"]
            ax.plot([p[0] for p in series], [p[1] for p in series], label=row["policy"], lw=1)
        unit = "users" if key == "users" else "requests/s"
        ax.set_title(f"{qps:g} {unit}, seed {seed}", fontsize=9)
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("KV cache usage")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_plots(
    rows: Sequence[dict[str, Any]], out_dir: Path, *, slo: float | None = None, banner: str = ""
) -> list[Path]:
    """Writes latency.png (the knee plot) and kv_usage.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_latency(rows, out_dir / "latency.png", slo=slo, banner=banner),
        plot_kv_usage(rows, out_dir / "kv_usage.png"),
    ]


def redraw(out: Path) -> list[Path]:
    """Draws ``out``'s plots again from its results.json (``lamps plot DIR``)."""
    import json

    from lamps.replay.metrics import read_rows

    data = json.loads((out / "results.json").read_text())
    prov = data.get("provenance") or {}
    banner = f"results of commit {str(prov.get('commit'))[:12]}" + (
        " DIRTY" if prov.get("dirty") else ""
    )
    return write_plots(
        read_rows(out / "results.json"), out, slo=data.get("slo_ttft_p99"), banner=banner
    )
