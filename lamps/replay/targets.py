"""LAMPS against the best baseline at that baseline's knee: the targets the evaluation states.

The best baseline is the one with the highest knee (mean curve; ties go to the lower mean
end-to-end latency there). At its knee every ratio is LAMPS' over the baseline's, computed per
seed (both ran on the seed's identical arrivals) and reported as a mean with its 95%
t-interval; a target is **met** only when the whole interval is on the right side of its bound.
The same holds for the cost of prediction noise (LAMPS with noise over its oracle, minus 1).
``lamps targets RESULTS_DIR [more dirs]`` prints the table as Markdown; ``--paired-at QPS``
prints every policy against LAMPS at one rate instead (the ablations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamps.replay.metrics import read_rows
from lamps.replay.report import BASELINES, DEFAULT_SLO_TTFT_P99, knees
from lamps.replay.stats import Interval, interval, knee

# (name, metric, bound): the ratio LAMPS / best baseline must stay at or below the bound.
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("mean e2e", "steady_e2e_mean", 0.8),
    ("P99 e2e", "steady_e2e_p99", 1.1),
    ("mean TTFT", "steady_ttft_mean", 0.5),
)
KNEE_TARGET = 1.2
NOISE_TARGET = 0.15


@dataclass(frozen=True)
class Verdict:
    """One target: the measured interval, its bound, and whether the interval meets it."""

    name: str
    measured: Interval
    bound: float
    at_most: bool

    @property
    def met(self) -> bool:
        if math.isnan(self.measured.half_width):
            return False  # one seed: no interval, no claim
        return self.measured.high <= self.bound if self.at_most else self.measured.low >= self.bound

    def row(self) -> str:
        sign = "<=" if self.at_most else ">="
        return (
            f"| {self.name} | {self.measured.format('{:.3f}')} | {sign} {self.bound:g} "
            f"| {'**met**' if self.met else 'NOT met'} |"
        )


def _by_seed(rows: Sequence[dict[str, Any]], policy: str, qps: float) -> dict[int, dict[str, Any]]:
    return {r.get("seed", 0): r for r in rows if r["policy"] == policy and r["qps"] == qps}


def paired_ratio(
    rows: Sequence[dict[str, Any]], policy: str, other: str, qps: float, metric: str
) -> Interval:
    """``policy / other`` on ``metric`` per seed both ran, as a mean with its 95% interval."""
    mine, theirs = _by_seed(rows, policy, qps), _by_seed(rows, other, qps)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        raise ValueError(f"no seed has both {policy!r} and {other!r} at {qps:g} req/s")
    return interval(mine[s][metric] / theirs[s][metric] for s in seeds)


def best_baseline(rows: Sequence[dict[str, Any]], baselines: Sequence[str], slo: float) -> str:
    """The baseline with the highest knee; ties: the lowest mean e2e at that knee."""
    ks = knees(rows, slo)
    present = [b for b in baselines if b in ks and ks[b]["knee"] is not None]
    if not present:
        raise ValueError(f"no baseline of {list(baselines)} meets the SLO at any swept rate")

    def e2e_at_knee(b: str) -> float:
        at = [r["steady_e2e_mean"] for r in rows if r["policy"] == b and r["qps"] == ks[b]["knee"]]
        mean: float = sum(at) / len(at)
        return mean

    return max(present, key=lambda b: (ks[b]["knee"], -e2e_at_knee(b)))


def evaluate(
    rows: Sequence[dict[str, Any]],
    policy: str = "lamps",
    oracle: str = "lamps-oracle",
    baselines: Sequence[str] = BASELINES,
    slo: float = DEFAULT_SLO_TTFT_P99,
) -> tuple[str, float, list[Verdict]]:
    """(best baseline, its knee, the verdicts)."""
    best = best_baseline(rows, baselines, slo)
    ks = knees(rows, slo)
    at = ks[best]["knee"]
    verdicts = [
        Verdict(f"{name} / {best}", paired_ratio(rows, policy, best, at, metric), bound, True)
        for name, metric, bound in TARGETS
    ]
    per_seed_knees = {}
    for p in (policy, best):
        by_seed: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            if r["policy"] == p:
                by_seed.setdefault(r.get("seed", 0), []).append((r["qps"], r["steady_ttft_p99"]))
        per_seed_knees[p] = {s: knee(pts, slo) or 0.0 for s, pts in by_seed.items()}
    seeds = sorted(set(per_seed_knees[policy]) & set(per_seed_knees[best]))
    knee_ratio = interval(
        per_seed_knees[policy][s] / per_seed_knees[best][s] if per_seed_knees[best][s] else math.inf
        for s in seeds
    )
    verdicts.append(Verdict(f"knee / {best}'s (per seed)", knee_ratio, KNEE_TARGET, False))
    if any(r["policy"] == oracle for r in rows):
        noise = paired_ratio(rows, policy, oracle, at, "steady_e2e_mean")
        cost = Interval(noise.mean - 1.0, noise.half_width, noise.n)
        verdicts.append(Verdict(f"noise cost, mean e2e / {oracle} - 1", cost, NOISE_TARGET, True))
    return best, at, verdicts


def format_targets(
    rows: Sequence[dict[str, Any]], policy: str = "lamps", oracle: str = "lamps-oracle"
) -> str:
    """Markdown: each target with its measured interval and verdict."""
    best, at, verdicts = evaluate(rows, policy, oracle)
    lines = [
        f"Best baseline: `{best}` (knee {at:g} req/s); `{policy}` over it at that rate, "
        "per-seed ratios, mean ± 95% CI:",
        "",
        "| target | measured | bound | verdict |",
        "|---|---:|---:|---|",
        *(v.row() for v in verdicts),
    ]
    return "\n".join(lines)


PAIRED_METRICS: tuple[tuple[str, str], ...] = (
    ("steady_e2e_mean", "mean e2e (s)"),
    ("steady_e2e_p99", "P99 e2e (s)"),
    ("steady_ttft_mean", "mean TTFT (s)"),
    ("steady_ttft_p99", "P99 TTFT (s)"),
    ("steady_normalized_latency_mean", "norm. latency (s/token)"),
)


def format_paired(rows: Sequence[dict[str, Any]], qps: float, reference: str = "lamps") -> str:
    """Markdown: every policy at ``qps``, each metric as its mean and its per-seed ratio to
    ``reference`` (mean ± 95% CI); the ablation table."""
    policies = sorted({r["policy"] for r in rows if r["qps"] == qps})
    if reference not in policies:
        raise ValueError(f"no {reference!r} rows at {qps:g} req/s")
    head = " | ".join(f"{label} | x {reference}" for _, label in PAIRED_METRICS)
    lines = [f"| policy | {head} |", "|---|" + "---:|---:|" * len(PAIRED_METRICS)]
    for p in sorted(policies, key=lambda p: (p != reference, p)):
        cells = [f"`{p}`"]
        prow = [r for r in rows if r["policy"] == p and r["qps"] == qps]
        if any(metric not in r for r in prow for metric, _ in PAIRED_METRICS):
            # Skipped past saturation in some seed: infinite, as the replay's tables say.
            lines.append("| " + " | ".join([f"`{p}`", *["inf"] * 2 * len(PAIRED_METRICS)]) + " |")
            continue
        for metric, _ in PAIRED_METRICS:
            values = [r[metric] for r in prow]
            cells.append(interval(values).format("{:.3g}"))
            ratio = paired_ratio(rows, p, reference, qps, metric)
            cells.append("1" if p == reference else ratio.format("{:.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_dirs(
    dirs: Sequence[Path],
    policy: str = "lamps",
    oracle: str = "lamps-oracle",
    paired_at: float | None = None,
) -> str:
    """``lamps targets DIR...``: the targets table of each results directory, under its name;
    with ``paired_at``, instead every policy of all of them at that rate against ``policy``."""
    if paired_at is not None:
        rows = [r for d in dirs for r in read_rows(d / "results.json")]
        return format_paired(rows, paired_at, policy)
    return "\n".join(
        f"### {d}\n\n{format_targets(read_rows(d / 'results.json'), policy, oracle)}\n"
        for d in dirs
    )
