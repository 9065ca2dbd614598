"""``lamps replay``'s options: their defaults (``ReplayConfig``'s, and the command's own) and
the parser (``lamps.replay.command`` runs it)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamps.defaults import DEFAULT_PROFILE

DEFAULT_OUT = Path("replay-results")

QUICK_SEEDS = (0, 1)
"""The defaults (``--quick``) are ``ReplayConfig``'s (one rate where the calibrated engine
separates the policies, 300 s) with two seeds; about 2 minutes on 2 cores with ``--jobs 2``."""
STOP_PAST = 30.0
"""--stop-past: a policy's higher rates are skipped past this steady P99 TTFT (seconds)."""
JOBS = 2
"""--jobs: worker processes."""
USERS_PROFILE = "llama31-8b-h100-128k"
USERS_DURATION = 1200.0
"""--users without --duration: a 20-minute window (the first 10% warm-up)."""


def replay_defaults() -> dict[str, Any]:
    """``ReplayConfig``'s defaults, which the options take (the library's and the CLI's)."""
    from lamps.replay.runner import ReplayConfig

    return {
        f.name: f.default
        for f in dataclasses.fields(ReplayConfig)
        if f.default is not dataclasses.MISSING
    }


def _csv(values: Sequence[Any]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


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


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: ``0,1,2`` or a range ``0-4`` (also ``lamps agents``')."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seeds like 0,1,2 or 0-4, got {text!r}"
        ) from None


def parse_user_counts(text: str) -> tuple[int, ...]:
    """``--users``: comma-separated counts, each >= 1 (also ``lamps agents``')."""
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
    from lamps.replay.modes import ApiMode, EngineKind
    from lamps.replay.policies import describe_policies
    from lamps.replay.profiles import ENGINE_SETTINGS, PROFILES
    from lamps.replay.report import DEFAULT_SLO_TTFT_P99
    from lamps.replay.routers import describe_routers, router_names
    from lamps.workloads import (
        BUILTIN_TRACES,
        CODING_TRACES,
        DEFAULT_MAX_HUMAN_SECONDS,
        GENERATED_TRACES,
    )
    from lamps.workloads.synthetic import SYNTHETIC_REQUESTS

    d = replay_defaults()
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
    r.add_argument("--synthetic-requests", type=int, default=SYNTHETIC_REQUESTS)
    r.add_argument(
        "--policies",
        type=_names,
        default=None,
        help=f"comma-separated (default: {_csv(d['policies'])})",
    )
    load = r.add_mutually_exclusive_group()
    load.add_argument(
        "--qps", type=_floats, default=None, help=f"Poisson rates, req/s (default {_csv(d['qps'])})"
    )
    load.add_argument(
        "--users",
        type=parse_user_counts,
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
        default=d["warm_prefix"],
        help="traced conversations: fraction of the largest tool+system prefix shared by all "
        f"conversations (default {d['warm_prefix']:g}, kv-cache-tester's --warm-prefix-pct; "
        "0: none)",
    )
    r.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"arrival window, virtual seconds (default {d['duration']:g})",
    )
    r.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help=f"seeds, e.g. 0-4 (default {_csv(QUICK_SEEDS)}); intervals need >= 2, reports use "
        ">= 5",
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
        default=d["engine"],
        choices=sorted(ENGINE_SETTINGS),
        help="vllm-0.32 (prefix caching on, its token budget) or paper (the 2024 "
        "fork: no prefix caching, 2,048-token budget)",
    )
    r.add_argument(
        "--hidden-fraction",
        type=float,
        default=d["hidden_fraction"],
        help="fraction of a step's compute time that hides swap copies (0-1)",
    )
    r.add_argument(
        "--api-mode",
        choices=ApiMode.values(),
        default=None,
        help="only policies of this API mode (stateless: each turn a new request)",
    )
    r.add_argument(
        "--engines",
        type=int,
        default=d["engines"],
        help=f"engines behind the router, each with the policy (default {d['engines']}; more "
        "need --router)",
    )
    r.add_argument(
        "--router",
        choices=router_names(),
        default=None,
        help="router policy placing requests on the engines (default: none, one engine)",
    )
    r.add_argument(
        "--warmup", type=float, default=d["warmup"], help="steady window start, fraction"
    )
    r.add_argument(
        "--cutoff", type=float, default=d["cutoff"], help="steady window arrivals end, fraction"
    )
    r.add_argument(
        "--drain",
        type=float,
        default=d["drain"],
        help="stop run-to-completion at this multiple of --duration",
    )
    r.add_argument(
        "--slo-ttft-p99",
        type=float,
        default=None,
        help=f"knee SLO, s (default {DEFAULT_SLO_TTFT_P99:g})",
    )
    r.add_argument(
        "--stop-past",
        type=float,
        default=STOP_PAST,
        help="skip a policy's higher rates once its steady P99 TTFT exceeds this many seconds "
        f"(default {STOP_PAST:g}, {STOP_PAST / DEFAULT_SLO_TTFT_P99:g}x the SLO; 0: run every "
        "rate)",
    )
    r.add_argument(
        "--noise",
        type=float,
        default=d["noise"],
        help="relative Gaussian noise on lamps' predictions (0.6 = 60%%)",
    )
    r.add_argument("--out", type=Path, default=DEFAULT_OUT)
    r.add_argument("--engine", choices=EngineKind.values(), default=EngineKind.SIM.value)
    r.add_argument("--jobs", type=int, default=JOBS, help=f"worker processes (default {JOBS})")
    r.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from a checkout of vllm-lamps with uncommitted changes (results marked DIRTY)",
    )
    r.add_argument("--vllm-logs", action="store_true", help="show vLLM's own log lines")
    r.add_argument("--no-plots", action="store_true")
