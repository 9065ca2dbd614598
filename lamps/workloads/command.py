"""``lamps workloads``: the commands that make the workload files ``lamps/data`` ships.

Building their parsers imports nothing but the standard library; each command imports what it
needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_workloads_parser(sub: Any) -> None:
    """Adds ``workloads`` (``derive``, ``pack-coding``) to the ``lamps`` parser."""
    w = sub.add_parser(
        "workloads",
        help="workload data tools",
        description="Make the workload files that lamps/data ships.",
    )
    wsub = w.add_subparsers(dest="workloads_command", required=True)
    d = wsub.add_parser(
        "derive",
        help="derive lamps/data files from an InferCept trace",
        description="Writes the per-type statistics the synthetic generator samples from and "
        "the compact copy of the trace (the files lamps/data ships) into OUT_DIR.",
    )
    d.add_argument("trace", type=Path, help="InferCept-format JSON trace (or builtin:NAME)")
    d.add_argument("out_dir", type=Path, help="directory the two files are written into")
    d.add_argument(
        "--builtin-name",
        default="infercept-multi-api",
        help="name of the compact trace (default infercept-multi-api)",
    )
    d.set_defaults(run=run_derive)

    p = wsub.add_parser(
        "pack-coding",
        help="pack the shipped subset of kv-cache-tester coding-agent traces",
        description="Chooses the subset of kv-cache-tester traces that ships as "
        "--trace builtin:claude-code (40 conversations, stratified by their largest input and "
        "their number of requests; every trace with sub-agents kept; all of them when there are "
        "no more than 40) and writes it packed (gzip, hash-id lists as runs of consecutive ids) "
        "to OUT_FILE. Every trace of SRC_DIR is parsed first, so a bad one fails here. The "
        "shipped file: lamps/data/claude_code/traces.json.gz, from the 133 traces in "
        "../shared/workloads/claude-code/traces.",
    )
    p.add_argument(
        "src_dir",
        type=Path,
        metavar="SRC_DIR",
        help="directory of kv-cache-tester trace files (its *.json files; or one file)",
    )
    p.add_argument("out_file", type=Path, metavar="OUT_FILE", help="the packed file to write")
    p.set_defaults(run=run_pack_coding)


def run_derive(args: argparse.Namespace) -> int:
    """``lamps workloads derive TRACE OUT_DIR``."""
    from lamps.workloads import (
        BUILTIN_TRACES,
        STATS_FILE,
        derive_stats,
        load_trace,
        write_compact,
        write_stats,
    )

    workload = load_trace(args.trace)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_stats(derive_stats(workload, args.trace.name), out_dir / STATS_FILE)
    name = args.builtin_name
    write_compact(workload, out_dir / BUILTIN_TRACES.get(name, f"{name}.json.gz"))
    print(f"kinds: {workload.kind_counts()}", file=sys.stderr)
    return 0


def run_pack_coding(args: argparse.Namespace) -> int:
    """``lamps workloads pack-coding SRC_DIR OUT_FILE``."""
    from lamps.workloads.coding_pack import pack_dir

    packed, read = pack_dir(args.src_dir, args.out_file)
    print(f"packed {packed} of {read} traces into {args.out_file}", file=sys.stderr)
    return 0
