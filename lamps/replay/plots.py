"""PNG plots of a replay's results (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _by_policy(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["policy"], []).append(row)
    for g in groups.values():
        g.sort(key=lambda r: r["qps"])
    return groups


def plot_latency(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean/P99 end-to-end latency and mean/P99 TTFT against the arrival rate, per policy."""
    panels = (
        ("e2e_mean", "mean end-to-end latency (s)"),
        ("e2e_p99", "P99 end-to-end latency (s)"),
        ("ttft_mean", "mean TTFT (s)"),
        ("ttft_p99", "P99 TTFT (s)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for policy, group in _by_policy(rows).items():
            ax.plot([r["qps"] for r in group], [r[key] for r in group], marker="o", label=policy)
        ax.set_xlabel("arrival rate (requests/s)")
        ax.set_ylabel(label)
        # Overloaded baselines are orders of magnitude slower; a log axis keeps the rest apart.
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_kv_usage(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """KV-cache usage over virtual time, one panel per rate, one line per policy."""
    rates = sorted({r["qps"] for r in rows})
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.4), squeeze=False)
    for ax, qps in zip(axes[0], rates, strict=True):
        for row in (r for r in rows if r["qps"] == qps):
            series = row["kv_usage"]
            ax.plot([p[0] for p in series], [p[1] for p in series], label=row["policy"], lw=1)
        ax.set_title(f"{qps:g} requests/s")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("KV cache usage")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Writes latency.png and kv_usage.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_latency(rows, out_dir / "latency.png"),
        plot_kv_usage(rows, out_dir / "kv_usage.png"),
    ]
