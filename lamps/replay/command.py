"""``lamps replay``: its options, and running it (simulated engine or the real-engine check)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamps.defaults import DEFAULT_PROFILE

DEFAULT_OUT = Path("replay-results")

QUICK: dict[str, Any] = {"qps": (4.0,), "duration": 300.0, "seeds": (0, 1)}
USERS_PROFILE = "llama31-8b-h100-128k"
USERS_DURATION = 1200.0
"""--users without --duration: a 20-minute window (the first 10% warm-up)."""
"""The defaults (``--quick``): one rate where the calibrated engine separates the policies,
two seeds, 300 s; about 2 minutes on 2 cores with ``--jobs 2``."""


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


def _ints(text: str) -> tuple[int, ...]:
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seeds like 0,1,2 or 0-4, got {text!r}"
        ) from None


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated user counts, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected user counts >= 1, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_replay_parser(sub: Any) -> None:
    """Adds the ``replay`` subcommand to the ``lamps`` parser."""
    from lamps.replay.policies import describe_policies
    from lamps.replay.profiles import ENGINE_SETTINGS, PROFILES
    from lamps.replay.routers import describe_routers, router_names
    from lamps.workloads import (
        BUILTIN_TRACES,
        CODING_TRACES,
        DEFAULT_MAX_HUMAN_SECONDS,
        GENERATED_TRACES,
    )

    r = sub.add_parser(
        "replay",
        help="replay a workload through vLLM's scheduler under several policies",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replays augmented-LLM requests through vLLM's real scheduler on a "
        "simulated GPU clock (or, with --engine real, a real vLLM engine on CPU) and compares "
        "scheduling policies with identical arrivals. With no options: the quick run (one "
        "rate, two seeds, 300 s).\n\npolicies and the source each follows:\n"
        + describe_policies()
        + "\n\nrouter policies (--engines N --router R):\n"
        + describe_routers(),
    )
    traces = ", ".join(f"builtin:{n}" for n in (*BUILTIN_TRACES, *GENERATED_TRACES, *CODING_TRACES))
    src = r.add_mutually_exclusive_group()
    src.add_argument(
        "--trace",
        help="InferCept-format JSON trace, a kv-cache-tester trace file or directory of them "
        f"(detected), or one of {traces}",
    )
    src.add_argument(
        "--synthetic",
        action="store_true",
        help="generate the six-type mixture from shipped statistics (one per seed); "
        "default: --trace builtin:infercept-multi-api",
    )
    r.add_argument("--synthetic-requests", type=int, default=397)
    r.add_argument(
        "--policies",
        type=_names,
        default=None,
        help="comma-separated (default: vllm,infercept,lamps)",
    )
    load = r.add_mutually_exclusive_group()
    load.add_argument("--qps", type=_floats, default=None, help="Poisson rates, req/s (default 4)")
    load.add_argument(
        "--users",
        type=_counts,
        default=None,
        help="closed-loop users, e.g. 4,8,16 (traced conversations): each user replays one "
        "conversation after another for --duration; measured per turn after --warmup",
    )
    r.add_argument(
        "--max-human-seconds",
        type=float,
        default=DEFAULT_MAX_HUMAN_SECONDS,
        help="traced conversations: cap on a person's gap before an input (default "
        f"{DEFAULT_MAX_HUMAN_SECONDS:g}, kv-cache-tester's --max-delay)",
    )
    r.add_argument(
        "--max-tool-seconds",
        type=float,
        default=None,
        help="traced conversations: cap on a tool call's gap (default: as traced)",
    )
    r.add_argument(
        "--warm-prefix",
        type=float,
        default=0.5,
        help="traced conversations: fraction of the largest tool+system prefix shared by all "
        "conversations (default 0.5, kv-cache-tester's --warm-prefix-pct; 0: none)",
    )
    r.add_argument(
        "--duration", type=float, default=None, help="arrival window, virtual seconds (default 300)"
    )
    r.add_argument(
        "--seeds",
        type=_ints,
        default=None,
        help="seeds, e.g. 0-4 (default 0,1); intervals need >= 2, reports use >= 5",
    )
    r.add_argument("--quick", action="store_true", help="the defaults, said explicitly")
    r.add_argument(
        "--profile",
        default=None,
        choices=sorted(PROFILES),
        help=f"default {DEFAULT_PROFILE}; with --users {USERS_PROFILE} (128k context)",
    )
    r.add_argument(
        "--engine-settings",
        default="vllm-0.32",
        choices=sorted(ENGINE_SETTINGS),
        help="vllm-0.32 (prefix caching on, its token budget) or paper (the 2024 "
        "fork: no prefix caching, 2,048-token budget)",
    )
    r.add_argument(
        "--hidden-fraction",
        type=float,
        default=1.0,
        help="fraction of a step's compute time that hides swap copies (0-1)",
    )
    r.add_argument(
        "--api-mode",
        choices=("session", "stateless"),
        default=None,
        help="only policies of this API mode (stateless: each turn a new request)",
    )
    r.add_argument(
        "--engines",
        type=int,
        default=1,
        help="engines behind the router, each with the policy (default 1; more need --router)",
    )
    r.add_argument(
        "--router",
        choices=router_names(),
        default=None,
        help="router policy placing requests on the engines (default: none, one engine)",
    )
    r.add_argument("--warmup", type=float, default=0.1, help="steady window start, fraction")
    r.add_argument("--cutoff", type=float, default=0.8, help="steady window arrivals end, fraction")
    r.add_argument(
        "--drain",
        type=float,
        default=3.0,
        help="stop run-to-completion at this multiple of --duration",
    )
    r.add_argument("--slo-ttft-p99", type=float, default=None, help="knee SLO, s (default 2)")
    r.add_argument(
        "--stop-past",
        type=float,
        default=30.0,
        help="skip a policy's higher rates once its steady P99 TTFT exceeds this many seconds "
        "(default 30, 15x the SLO; 0: run every rate)",
    )
    r.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="relative Gaussian noise on lamps' predictions (0.6 = 60%%)",
    )
    r.add_argument("--out", type=Path, default=DEFAULT_OUT)
    r.add_argument("--engine", choices=("sim", "real"), default="sim")
    r.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    r.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from a checkout of vllm-lamps with uncommitted changes (results marked DIRTY)",
    )
    r.add_argument("--vllm-logs", action="store_true", help="show vLLM's own log lines")
    r.add_argument("--no-plots", action="store_true")


def _quiet_vllm(show: bool) -> None:
    from lamps.replay.runner import quiet_vllm_logs

    os.environ["LAMPS_VLLM_LOGS"] = "1" if show else "0"  # spawned workers inherit it
    quiet_vllm_logs()


def run_replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``lamps replay``: runs, writes results.json/table.md/knees.md/plots, prints the table."""
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        # Before the runs, not after them: the plots are drawn last.
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    from lamps.replay.metrics import write_results
    from lamps.replay.policies import REGISTRY
    from lamps.replay.provenance import provenance, require_clean
    from lamps.replay.report import (
        DEFAULT_SLO_TTFT_P99,
        RATE_AXIS,
        USERS_AXIS,
        format_knees,
        format_markdown,
        format_table,
    )
    from lamps.replay.runner import ReplayConfig, run_all
    from lamps.replay.verdicts import format_verdicts
    from lamps.workloads import load_trace, synthetic_workload

    _quiet_vllm(args.vllm_logs)
    real = args.engine == "real"
    policies = args.policies
    if policies is None:
        policies = ("vllm", "infercept", "lamps")
        if args.api_mode is not None:
            policies = tuple(n for n, s in REGISTRY.items() if _mode(s.name) == args.api_mode)
    if args.api_mode is not None:
        wrong = [p for p in policies if p in REGISTRY and _mode(p) != args.api_mode]
        if wrong:
            raise ValueError(
                f"--api-mode {args.api_mode}: {', '.join(wrong)} replay in another mode"
            )
    users = args.users or ()
    if users and real:
        raise ValueError("--users: the real-engine check replays Poisson arrivals (--qps)")
    if real and (args.engines != 1 or args.router is not None):
        raise ValueError("--engines, --router: the real-engine check runs one engine")
    given: dict[str, Any] = {
        "policies": policies,
        "qps": () if users else args.qps,
        "duration": args.duration,
    }
    if real:
        from lamps.replay.real import DEFAULTS

        given = {
            k: DEFAULTS[k] if v is None or (args.policies is None and k == "policies") else v
            for k, v in given.items()
        }
    else:
        given = {k: QUICK[k] if v is None else v for k, v in given.items()}
        if users and args.duration is None:
            given["duration"] = USERS_DURATION
    seeds = args.seeds if args.seeds is not None else (QUICK["seeds"] if not real else (0,))
    config = ReplayConfig(
        **given,
        profile=args.profile or (USERS_PROFILE if users else DEFAULT_PROFILE),
        engine=args.engine_settings,
        hidden_fraction=args.hidden_fraction,
        noise=args.noise,
        seeds=tuple(seeds),
        warmup=args.warmup,
        cutoff=args.cutoff,
        drain=args.drain,
        stop_past=args.stop_past or None,
        users=users,
        warm_prefix=args.warm_prefix,
        engines=args.engines,
        router=args.router,
    )
    prov = provenance()  # after the options are known good: their errors come first
    require_clean(prov, args.allow_dirty)
    if not args.synthetic:
        workload = load_trace(
            args.trace or ("builtin:claude-code" if users else "builtin:infercept-multi-api"),
            max_human_seconds=args.max_human_seconds,
            max_tool_seconds=args.max_tool_seconds,
        )
        source: Any = workload
    else:
        workload = synthetic_workload(args.synthetic_requests, seed=seeds[0])
        n = args.synthetic_requests
        source = lambda s: synthetic_workload(n, seed=s)  # noqa: E731
    slo = args.slo_ttft_p99 or DEFAULT_SLO_TTFT_P99
    axis = USERS_AXIS if users else RATE_AXIS
    started = time.perf_counter()
    print(
        f"lamps replay: {workload.name if not args.synthetic else 'synthetic'} "
        f"(engine={args.engine}, "
        f"profile={config.profile}, settings={config.engine}, hidden={config.hidden_fraction:g}"
        + (f", {config.engines} engines behind {config.router}" if config.router else "")
        + "), "
        f"policies={','.join(config.policies)}, {axis.key}="
        f"{','.join(f'{q:g}' for q in config.loads)}, "
        f"duration={config.duration:g}s, seeds={','.join(map(str, config.seed_list))}\n"
        f"{prov.banner()}",
        file=sys.stderr,
    )
    out: Path = args.out
    header: dict[str, Any] = {
        "provenance": prov.as_dict(),
        "command": "lamps " + " ".join(shlex.quote(a) for a in argv),
        "config": {k: v for k, v in config.__dict__.items() if k != "extra"},
        "slo_ttft_p99": slo,
    }
    if real:
        from lamps.replay.real import run_real

        rows = run_real(workload, config, progress_stream=sys.stderr)
    else:
        total = len(config.policies) * len(config.loads) * len(config.seed_list)
        shown = [0]

        def progress(done: list[dict[str, Any]]) -> None:
            for row in done[shown[0] :]:
                ran = "skipped" not in row
                print(
                    f"  [{done.index(row) + 1}/{total}] {row['policy']} @ {row[axis.key]:g} "
                    f"{axis.unit} seed {row['seed']}: "
                    + (
                        f"{axis.knee_what} {row[axis.knee_metric]:.3g} s "
                        f"({row['wall_seconds']:.0f} s)"
                        if ran
                        else "skipped (past saturation)"
                    ),
                    file=sys.stderr,
                )
            shown[0] = len(done)
            write_results(done, out, **header)  # an interrupted replay keeps what it has

        rows = run_all(source, config, jobs=args.jobs, on_row=progress)
    elapsed = time.perf_counter() - started
    header["wall_seconds"] = round(elapsed, 1)
    results = write_results(rows, out, **header)
    banner = prov.banner()
    (out / "command.txt").write_text(header["command"] + "\n")
    (out / "table.md").write_text(f"{banner}\n\n" + format_markdown(rows) + "\n")
    written = [results, out / "table.md"]
    print(banner)
    print(format_table(rows))
    if not real:
        knees_md = format_knees(rows, slo)
        slo_line = f"SLO: {axis.knee_what} <= {slo:g} s"
        verdicts = format_verdicts(rows)
        (out / "knees.md").write_text(
            f"{banner}\n\n{slo_line}\n\n{knees_md}\n\n```\n{verdicts}\n```\n"
        )
        written.append(out / "knees.md")
        print(f"\nknees ({slo_line}):\n{knees_md}\n\n{verdicts}")
    if not args.no_plots:
        from lamps.replay.plots import write_plots

        written += write_plots(rows, out, slo=slo, banner=banner)
    print(f"wrote {', '.join(str(p) for p in written)} ({elapsed:.0f}s)", file=sys.stderr)
    return 0


def _mode(name: str) -> str:
    from lamps.replay.policies import make_policy

    return make_policy(name).api_mode
