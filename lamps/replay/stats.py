"""Statistics over seeds: 95% confidence intervals (Student's t), aggregation, knees, ratios.

Every reported point is the mean over independent seeds (arrivals, and the synthetic trace
and prediction noise where used) with a two-sided 95% interval from the t-distribution with
``n - 1`` degrees of freedom: ``mean +- t(0.975, n-1) * s / sqrt(n)``. A value that is
infinite in some seed (a P99 TTFT with more than 1% of requests never served) makes the
mean infinite and the interval unbounded; that is reported as such, never dropped.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# t(0.975, df) for df = 1..30; beyond 30 the normal quantile is within 2%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.960 + 2.4 / df  # within 0.1% of the exact quantile for df > 30


@dataclass(frozen=True)
class Interval:
    """Mean over seeds and its 95% confidence half-width (nan with one seed)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, fmt: str = "{:.3g}") -> str:
        """``mean ± half`` (or ``inf``)."""
        if math.isinf(self.mean):
            return "inf"
        if math.isnan(self.half_width):
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format(self.half_width)}"


def interval(values: Iterable[float]) -> Interval:
    """Mean and 95% t-interval half-width of ``values`` (one per seed)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    if any(math.isinf(x) for x in xs):
        return Interval(math.inf, math.inf, n)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, math.nan, 1)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return Interval(mean, t_critical(n - 1) * math.sqrt(var / n), n)


def aggregate(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], by: Sequence[str] = ("policy", "qps")
) -> list[dict[str, Any]]:
    """One row per ``by`` group: each key becomes an Interval over the group's seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[b] for b in by)].append(row)
    out = []
    for key, group in groups.items():
        agg: dict[str, Any] = dict(zip(by, key, strict=True))
        agg["seeds"] = sorted(r.get("seed", 0) for r in group)
        for k in keys:
            # A real-engine row reports what it cannot observe as None.
            agg[k] = interval(r[k] for r in group if r.get(k) is not None)
        out.append(agg)
    out.sort(key=lambda r: tuple(r[b] for b in by))
    return out


def knee(points: Sequence[tuple[float, float]], slo: float) -> float | None:
    """The highest rate whose value stays within ``slo`` with every lower rate also within it.

    ``points``: (rate, value) pairs, e.g. (qps, mean P99 TTFT over seeds). None when even the
    lowest rate misses the SLO."""
    best = None
    for rate, value in sorted(points):
        if not value <= slo:
            break
        best = rate
    return best


def crossing(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """The rate at which a rising curve first reaches ``level``, interpolated linearly in
    log(value) between the sweep's rates; None when it never does."""
    pts = sorted(points)
    if pts and pts[0][1] >= level:
        return pts[0][0]
    for (r0, v0), (r1, v1) in itertools.pairwise(pts):
        if v0 < level <= v1:
            if math.isinf(v1) or v0 <= 0:
                return (r0 + r1) / 2
            f = (math.log(level) - math.log(v0)) / (math.log(v1) - math.log(v0))
            return r0 + f * (r1 - r0)
    return None
