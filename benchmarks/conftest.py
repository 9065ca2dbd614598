"""Prints, after a benchmark run, each implementation's median time as a ratio to LAMPS's."""

from __future__ import annotations

from collections import defaultdict

import pytest


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """One line per benchmark group: medians and the ratio against the `lamps` variant."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in session.benchmarks:
        if not bench.has_error and bench.stats is not None:
            impl = str((bench.params or {}).get("impl", bench.name))
            groups[bench.group or bench.name][impl] = bench.stats.median
    terminalreporter.section("median time, and ratio to lamps (>1: lamps is faster)")
    for group, medians in sorted(groups.items()):
        base = next((m for impl, m in medians.items() if impl.startswith("lamps")), None)
        cells = []
        for impl, median in sorted(medians.items(), key=lambda kv: kv[1]):
            ratio = "" if impl.startswith("lamps") or not base else f" ({median / base:.2f}x)"
            cells.append(f"{impl} {median * 1e3:.4f} ms{ratio}")
        terminalreporter.write_line(f"{group}: " + ", ".join(cells))
