"""Command line: ``lamps replay`` compares schedulers, ``lamps workloads derive`` makes data."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path("replay-results")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The ``lamps`` argument parser."""
    from lamps.replay.policies import POLICY_NAMES
    from lamps.replay.profiles import PROFILES

    parser = argparse.ArgumentParser(prog="lamps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "replay",
        help="replay a workload through vLLM's scheduler under several policies",
        description="Replays augmented-LLM requests through vLLM's real scheduler on a "
        "simulated GPU clock (or, with --engine real, a real vLLM engine on CPU) and compares "
        "scheduling policies with identical arrivals.",
    )
    src = r.add_mutually_exclusive_group()
    src.add_argument("--trace", help="InferCept-format JSON trace, or builtin:infercept-multi-api")
    src.add_argument(
        "--synthetic",
        action="store_true",
        help="generate the six-type mixture from shipped statistics (default)",
    )
    r.add_argument(
        "--synthetic-requests",
        type=int,
        default=397,
        help="request templates the synthetic generator draws (default 397)",
    )
    r.add_argument(
        "--policies",
        type=_names,
        default=None,
        help=f"comma-separated, from {', '.join(POLICY_NAMES)} "
        "(default: vllm,infercept,lamps; with --engine real: vllm,vllm-preserve,infercept,lamps)",
    )
    r.add_argument(
        "--qps",
        type=_floats,
        default=None,
        help="comma-separated Poisson arrival rates, requests/s (default 5,6; --engine real: 4)",
    )
    r.add_argument(
        "--duration",
        type=float,
        default=None,
        help="arrival window in seconds of virtual time (default 300; --engine real: 10)",
    )
    r.add_argument(
        "--profile",
        default="gptj-6b-a100",
        choices=sorted(PROFILES),
        help="simulated model + GPU (default gptj-6b-a100: GPT-J-6B, A100, 40 GB)",
    )
    r.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="relative Gaussian noise on lamps' predictions, e.g. 0.6 = 60%% "
        "(lamps-oracle never gets noise)",
    )
    r.add_argument("--seed", type=int, default=0, help="arrivals/synthetic/noise seed")
    r.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT})"
    )
    r.add_argument(
        "--engine",
        choices=("sim", "real"),
        default="sim",
        help="sim: real scheduler, simulated GPU clock; real: a real vLLM engine on "
        "CPU with a tiny random-weight model and a short, scaled-down trace",
    )
    r.add_argument(
        "--jobs", type=int, default=1, help="parallel worker processes for --engine sim (default 1)"
    )
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
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


def _replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from lamps.replay.metrics import format_markdown, format_table, write_results
    from lamps.replay.runner import ReplayConfig, run_all, total_requests
    from lamps.workloads import load_trace, synthetic_workload

    real = args.engine == "real"
    given = {"policies": args.policies, "qps": args.qps, "duration": args.duration}
    if real:
        from lamps.replay.real import DEFAULTS

        given = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    config = ReplayConfig(
        **{k: v for k, v in given.items() if v is not None},
        profile=args.profile,
        noise=args.noise,
        seed=args.seed,
    )
    if args.trace:
        workload = load_trace(args.trace)
    else:
        workload = synthetic_workload(args.synthetic_requests, seed=args.seed)
    started = time.perf_counter()
    print(
        f"lamps replay: {workload.name} ({len(workload.requests)} request templates), "
        f"engine={args.engine}, profile={config.profile}, policies={','.join(config.policies)}, "
        f"qps={','.join(f'{q:g}' for q in config.qps)}, duration={config.duration:g}s, "
        f"noise={config.noise:g}, seed={config.seed}",
        file=sys.stderr,
    )
    if real:
        from lamps.replay.real import run_real

        rows = run_real(workload, config, progress_stream=sys.stderr)
    else:
        with tqdm(
            total=total_requests(workload, config), unit="req", file=sys.stderr, desc="replay"
        ) as bar:
            rows = run_all(
                workload,
                config,
                jobs=args.jobs,
                progress=bar.update,
                # A long replay keeps what it has finished if it is interrupted.
                on_row=lambda done: write_results(done, args.out),
            )
    out: Path = args.out
    results = write_results(rows, out)
    (out / "command.txt").write_text("lamps " + " ".join(shlex.quote(a) for a in argv) + "\n")
    (out / "table.md").write_text(format_markdown(rows) + "\n")
    print(format_table(rows))
    written = [results, out / "table.md"]
    if not args.no_plots:
        from lamps.replay.plots import write_plots

        written += write_plots(rows, out)
    elapsed = time.perf_counter() - started
    print(f"wrote {', '.join(str(p) for p in written)} ({elapsed:.0f}s)", file=sys.stderr)
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamps`` command."""
    # vLLM logs at INFO on import and per config; the table is the output here.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args, argv)
        if args.command == "workloads":
            return _workloads_derive(args)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"lamps: error: {e}\n")
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
