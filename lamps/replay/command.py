"""``lamps replay``: running it (simulated engine or the real-engine check); its options are
in ``lamps.replay.options``."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamps.defaults import DEFAULT_PROFILE
from lamps.logs import choose_vllm_logs
from lamps.replay.options import (
    QUICK_SEEDS,
    USERS_DURATION,
    USERS_PROFILE,
    add_replay_parser,
    replay_defaults,
)

if TYPE_CHECKING:
    from lamps.replay.modes import ApiMode

__all__ = ["add_replay_parser", "run_replay"]


def run_replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``lamps replay``: runs, writes results.json/table.md/knees.md/plots, prints the table."""
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        # Before the runs, not after them: the plots are drawn last.
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    from lamps.replay.metrics import write_results
    from lamps.replay.modes import ApiMode, EngineKind
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

    choose_vllm_logs(args.vllm_logs)  # spawned workers inherit the choice
    real = EngineKind(args.engine) == EngineKind.REAL
    mode = None if args.api_mode is None else ApiMode(args.api_mode)
    defaults = replay_defaults()
    policies = args.policies
    if policies is None:
        policies = defaults["policies"]
        if mode is not None:
            policies = tuple(n for n, s in REGISTRY.items() if _mode(s.name) == mode)
    if mode is not None:
        wrong = [p for p in policies if p in REGISTRY and _mode(p) != mode]
        if wrong:
            raise ValueError(f"--api-mode {mode}: {', '.join(wrong)} replay in another mode")
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
        from lamps.replay.real import DEFAULTS as REAL_DEFAULTS

        given = {
            k: REAL_DEFAULTS[k] if v is None or (args.policies is None and k == "policies") else v
            for k, v in given.items()
        }
        seeds = REAL_DEFAULTS["seeds"] if args.seeds is None else args.seeds
    else:
        given = {k: defaults[k] if v is None else v for k, v in given.items()}
        if users and args.duration is None:
            given["duration"] = USERS_DURATION
        seeds = QUICK_SEEDS if args.seeds is None else args.seeds
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
        "config": dict(vars(config)),
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


def _mode(name: str) -> ApiMode:
    from lamps.replay.policies import make_policy

    return make_policy(name).api_mode
