"""Prints, after a benchmark run, each implementation's median time as a ratio to LAMPS's, and
the median of a benchmark with a time budget (``extra_info["budget_seconds"]``) as a ratio to
that budget.

Also keeps the source tree from shadowing the installed package (see below), and quiets vLLM's
log lines as the ``lamps`` commands do.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

# `python -m pytest` from the repository root (like `python -c` or PYTHONPATH=.) puts the root
# first on sys.path, where `lamps/` is the source without its compiled extensions: `import lamps`
# would stop at "No module named 'lamps._core'". The benchmarks measure the installed package (a
# wheel, or an editable install, whose import hook maps both the source and the built extensions),
# so the root comes off sys.path before any benchmark module imports `lamps`.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _ROOT]

from lamps.logs import choose_vllm_logs  # noqa: E402  (after the path fix above)

# vLLM's log level for every benchmark, chosen where the `lamps` commands choose it: quiet, so
# the tables are the output (a VLLM_LOGGING_LEVEL already set wins).
choose_vllm_logs(False)


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
    budgeted = [
        b
        for b in session.benchmarks
        if not b.has_error and b.stats is not None and "budget_seconds" in b.extra_info
    ]
    if budgeted:
        terminalreporter.section("median time as a ratio to its budget (<1: within it)")
    for bench in budgeted:
        budget = bench.extra_info["budget_seconds"]
        terminalreporter.write_line(
            f"{bench.name}: {bench.stats.median:.1f} s, budget {budget:g} s: "
            f"{bench.stats.median / budget:.3f}x"
        )
