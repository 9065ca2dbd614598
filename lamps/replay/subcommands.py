"""The replay's smaller commands: ``lamps calibrate``, ``lamps plot`` and ``lamps targets`` over
a results directory that ``lamps replay --out DIR`` wrote, and ``lamps stateless-eval``.

Building their parsers imports nothing but the standard library (``lamps --help`` stays fast);
each command imports its module when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

RESULTS_DIR_HELP = "a directory that `lamps replay --out DIR` wrote (its results.json is read)"
STATELESS_POLICIES = ("vllm", "lamps-stateless")
"""``lamps stateless-eval``'s default policies: vLLM's prefix cache only, and LAMPS' sessions."""


def add_results_parsers(sub: Any) -> None:
    """Adds ``calibrate``, ``plot``, ``targets`` and ``stateless-eval`` to the ``lamps`` parser."""
    c = sub.add_parser(
        "calibrate",
        help="check a replay against InferCept's published operating points",
        description="The calibration check: does the replay reproduce InferCept's published "
        "operating points (InferCept sustains a 1.6x higher arrival rate than vLLM at equal "
        "normalized latency, and both saturate within 1-4 requests/s), within 20%? Reads the "
        "vllm and infercept rows of DIR/results.json, prints the table and writes "
        "calibration.md, calibration.json and calibration.png into DIR. Exit status 1 when a "
        "target is not met. The method: docs/replay.md, section Calibration.",
    )
    c.add_argument("dir", type=Path, metavar="DIR", help=RESULTS_DIR_HELP)
    c.set_defaults(run=run_calibrate)

    p = sub.add_parser(
        "plot",
        help="(re)draw a results directory's plots",
        description="Draws DIR's plots again from its results.json, as `lamps replay` draws "
        "them: latency.png (each metric against the load, a line per policy, 95% intervals "
        "as bands; the SLO the replay ran with) and kv_usage.png (KV-cache usage over virtual "
        "time, first seed). Needs matplotlib (the replay extra).",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help=RESULTS_DIR_HELP)
    p.set_defaults(run=run_plot)

    t = sub.add_parser(
        "targets",
        help="LAMPS against the best baseline at that baseline's knee, as Markdown",
        description="The targets the evaluation states: LAMPS against the best baseline (the "
        "highest knee; ties go to the lower mean end-to-end latency there) at that baseline's "
        "knee. Each ratio is computed per seed (both ran on the seed's identical arrivals) and "
        "reported as a mean with its 95% t-interval; a target is met only when the whole "
        "interval is on the right side of its bound. The same holds for the cost of prediction "
        "noise (LAMPS with noise over its oracle, minus 1). Prints one table per DIR.",
    )
    t.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help=RESULTS_DIR_HELP)
    t.add_argument(
        "--policy", default="lamps", help="the policy judged against the baselines (default lamps)"
    )
    t.add_argument(
        "--oracle",
        default="lamps-oracle",
        help="the same policy without prediction noise, for the noise cost when its rows are "
        "present (default lamps-oracle)",
    )
    t.add_argument(
        "--paired-at",
        type=float,
        metavar="QPS",
        help="instead: every policy of all DIRs at this rate against --policy, each metric with "
        "its per-seed ratio (the ablation tables)",
    )
    t.set_defaults(run=run_targets)

    add_stateless_eval_parser(sub)


def add_stateless_eval_parser(sub: Any) -> None:
    """Adds ``stateless-eval`` to the ``lamps`` parser."""
    s = sub.add_parser(
        "stateless-eval",
        help="agents over the OpenAI API in the replay: per-turn and per-program figures",
        description="Stateless-API evaluation: agents served over the OpenAI API, per turn "
        "and per program. Every turn of an agent program is a new request that resends the "
        "whole conversation. Replays the agent trace (builtin:agent) in the replay's stateless "
        "API mode for the policies given, on identical arrivals, several seeds per rate, and "
        "reports with 95% t-intervals over seeds: per turn, the latency from the turn's "
        "request to its last token (mean, P99) and the prompt tokens found computed; per "
        "program, end-to-end latency and TTFT (mean, P99). Writes results.json and table.md "
        "into --out and prints the table.",
    )
    s.add_argument(
        "--policies",
        default=",".join(STATELESS_POLICIES),
        help="comma-separated stateless policies (default %(default)s: the prefix cache only, "
        "and lamps.vllm.sessions); any other policy that replays in the stateless mode works, "
        "e.g. continuum",
    )
    s.add_argument(
        "--qps", default="0.5,1,2", help="comma-separated arrival rates (default %(default)s)"
    )
    s.add_argument(
        "--seeds", default="0-2", help="a seed or a range of seeds, e.g. 3 or 0-4 (default 0-2)"
    )
    s.add_argument(
        "--duration",
        type=float,
        default=300.0,
        help="seconds of arrivals per run (default %(default)g)",
    )
    s.add_argument(
        "--profile",
        default="llama31-8b-h100",
        help="the replay's GPU profile (default %(default)s; `lamps replay --help` lists them)",
    )
    s.add_argument(
        "--noise",
        type=float,
        default=0.6,
        help="relative noise on LAMPS' hints (default %(default)g, i.e. 60%%)",
    )
    s.add_argument("--jobs", type=int, default=2, help="worker processes (default %(default)d)")
    s.add_argument(
        "--out",
        type=Path,
        default=Path("replay-results/stateless"),
        help="output directory (default %(default)s)",
    )
    s.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from a checkout of vllm-lamps with uncommitted changes (results marked DIRTY)",
    )
    s.set_defaults(run=run_stateless_eval)


def run_calibrate(args: argparse.Namespace) -> int:
    """``lamps calibrate DIR``: prints the table; exit status 1 when a target is not met."""
    from lamps.replay.calibration import format_markdown, write_calibration

    result = write_calibration(args.dir)
    print(format_markdown(result))
    return 0 if result["met"] else 1


def run_plot(args: argparse.Namespace) -> int:
    """``lamps plot DIR``: (re)draws DIR's plots from its results.json."""
    from lamps.replay.plots import redraw

    redraw(args.dir)
    return 0


def run_targets(args: argparse.Namespace) -> int:
    """``lamps targets DIR...``: the targets of each results directory."""
    from lamps.replay.targets import format_dirs

    print(format_dirs(args.dirs, args.policy, args.oracle, args.paired_at))
    return 0


def run_stateless_eval(args: argparse.Namespace) -> int:
    """``lamps stateless-eval``: runs the evaluation, writes results.json and table.md."""
    from lamps.replay.stateless_eval import evaluate

    print(evaluate(args))
    return 0
