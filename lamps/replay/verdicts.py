"""One line per policy: how it compares with the reference policy at the highest load all ran.

The reference is ``vllm`` when it ran, else the first policy. At the highest load where every
policy ran every seed (policies past saturation are skipped above it), each policy's headline
metric is divided by the reference's on the same seed (both ran the seed's identical arrivals)
and reported as a mean with its 95% t-interval; "faster" or "slower" is said only when the whole
interval is on one side of 1, else "no difference shown". The headline metric is the mean
end-to-end latency over the steady window for a rate sweep, the per-turn p95 TTFT for a
closed-loop (``--users``) sweep, with the second metric beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lamps.replay.report import load_axis
from lamps.replay.stats import Interval, interval

# axis key -> ((metric, what it is), (second metric, what it is))
HEADLINES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "qps": (("steady_e2e_mean", "mean e2e"), ("steady_ttft_p99", "P99 TTFT")),
    "users": (("ttft_p95", "per-turn p95 TTFT"), ("ttft_mean", "mean TTFT")),
}


def common_load(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    """The highest load at which every policy ran every seed; None if there is none."""
    ran = [r for r in rows if "skipped" not in r]
    policies = {r["policy"] for r in rows}
    seeds = {r.get("seed", 0) for r in rows}
    full = [
        load
        for load in {r[key] for r in ran}
        if all(
            {r.get("seed", 0) for r in ran if r["policy"] == p and r[key] == load} == seeds
            for p in policies
        )
    ]
    return max(full) if full else None


def _ratio(rows: Sequence[dict[str, Any]], policy: str, ref: str, key: str, load: float,
           metric: str) -> Interval:  # fmt: skip
    def by_seed(p: str) -> dict[int, float]:
        return {r.get("seed", 0): r[metric] for r in rows
                if r["policy"] == p and r[key] == load and "skipped" not in r}  # fmt: skip

    mine, theirs = by_seed(policy), by_seed(ref)
    return interval(
        mine[s] / theirs[s] if theirs[s] > 0 else math.nan for s in sorted(mine) if s in theirs
    )


def _word(ratio: Interval) -> str:
    if math.isinf(ratio.mean):
        return "higher (worse)"
    if math.isnan(ratio.half_width) or ratio.n < 2:
        return "one seed: no interval, no verdict"
    if ratio.high < 1.0:
        return "lower (better)"
    if ratio.low > 1.0:
        return "higher (worse)"
    return "no difference shown"


def format_verdicts(rows: Sequence[dict[str, Any]], reference: str | None = None) -> str:
    """The verdict lines; an explanation instead when no load has every policy on every seed."""
    axis = load_axis(rows)
    (metric, what), (second, second_what) = HEADLINES[axis.key]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    ref = reference or ("vllm" if "vllm" in policies else policies[0])
    load = common_load(rows, axis.key)
    if load is None:
        return "verdict: no load at which every policy ran every seed"
    lines = [f"verdict at {load:g} {axis.unit} (the highest load every policy ran), {what} "
             f"over {ref}'s per seed, mean [95% CI]:"]  # fmt: skip
    width = max(len(p) for p in policies)
    for p in policies:
        if p == ref:
            continue
        head = _ratio(rows, p, ref, axis.key, load, metric)
        side = _ratio(rows, p, ref, axis.key, load, second)
        lines.append(
            f"  {p:<{width}}  {what} {_fmt(head)} x {ref}'s: {_word(head)}; "
            f"{second_what} {_fmt(side)} x"
        )
    return "\n".join(lines)


def _fmt(value: Interval) -> str:
    if math.isinf(value.mean):
        return "inf"  # a seed where the policy left the window's requests without a first token
    if math.isnan(value.half_width):
        return f"{value.mean:.2f}"
    return f"{value.mean:.2f} [{value.low:.2f}, {value.high:.2f}]"
