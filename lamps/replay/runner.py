"""Runs every (policy, rate, seed) of a replay, with identical arrivals per (rate, seed).

Each run replays arrivals over ``[0, duration)``, notes the steady window at ``duration``
(``lamps.replay.metrics``) and goes on until every arrival has finished or the drain limit
(``drain * duration``) is reached, so one run gives both the steady-window and the
run-to-completion view (the state at ``duration`` does not depend on what happens after).

With ``users`` instead of rates, each run is a closed loop of that many users replaying
traced conversations (``lamps.replay.flows.UserLoop``, the same seeded trace order for every
policy) for ``duration`` virtual seconds, measured per turn after the warm-up
(``lamps.replay.turn_metrics``).

With ``engines`` > 1 (or a ``router``), each run replays through that many engines, each with
its own instance of the policy, behind the router policy (``lamps.replay.cluster``).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lamps.defaults import DEFAULT_PROFILE
from lamps.logs import apply_vllm_logs
from lamps.replay.flows import ArrivalFlow, UserLoop, flow_for
from lamps.replay.modes import EngineKind
from lamps.replay.policies import make_policy, policy_names
from lamps.replay.profiles import get_engine_settings, get_profile
from lamps.workloads import Arrival, Workload, poisson_arrivals


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay: policies x rates x seeds over one workload."""

    policies: tuple[str, ...] = ("vllm", "infercept", "lamps")
    qps: tuple[float, ...] = (4.0,)
    duration: float = 300.0
    profile: str = DEFAULT_PROFILE
    engine: str = "vllm-0.32"
    hidden_fraction: float = 1.0
    noise: float = 0.0
    seed: int = 0
    seeds: tuple[int, ...] = ()
    warmup: float = 0.1
    cutoff: float = 0.8
    drain: float = 3.0
    stop_past: float | None = None  # skip a policy's higher rates once its P99 TTFT passes this
    users: tuple[int, ...] = ()  # closed-loop user counts, instead of rates (qps must be ())
    warm_prefix: float = 0.5  # traced conversations: kv-cache-tester's --warm-prefix-pct
    engines: int = 1  # engines behind the router, each with the policy
    router: str | None = None  # router policy (lamps.replay.routers); needed with engines > 1

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("policies: at least one policy is needed")
        known = policy_names()
        for p in self.policies:
            if p not in known:
                raise ValueError(f"policies: unknown policy {p!r}; known: {', '.join(known)}")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies: duplicates in {self.policies}")
        if bool(self.qps) == bool(self.users):
            raise ValueError("qps, users: give rates or user counts, exactly one of the two")
        for u in self.users:
            if isinstance(u, bool) or not isinstance(u, int) or u < 1:
                raise ValueError(f"users: counts must be integers >= 1, got {u!r}")
        if not 0 <= self.warm_prefix <= 1:
            raise ValueError(f"warm_prefix: must be in [0, 1], got {self.warm_prefix}")
        for q in self.qps:
            if not (math.isfinite(q) and q > 0):
                raise ValueError(f"qps: rates must be finite and > 0, got {q}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration: must be finite and > 0, got {self.duration}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise: must be finite and >= 0, got {self.noise}")
        if not 0 <= self.hidden_fraction <= 1:
            raise ValueError(f"hidden_fraction: must be in [0, 1], got {self.hidden_fraction}")
        if not 0 <= self.warmup < self.cutoff <= 1:
            raise ValueError(f"need 0 <= warmup < cutoff <= 1, got {self.warmup}, {self.cutoff}")
        if not self.drain >= 1:
            raise ValueError(f"drain: must be >= 1 (a multiple of duration), got {self.drain}")
        get_profile(self.profile)
        get_engine_settings(self.engine)
        self._check_engines()

    def _check_engines(self) -> None:
        if isinstance(self.engines, bool) or not isinstance(self.engines, int) or self.engines < 1:
            raise ValueError(f"engines: must be an integer >= 1, got {self.engines!r}")
        if self.router is None:
            if self.engines > 1:
                raise ValueError(f"engines: {self.engines} engines need a router policy")
            return
        from lamps.replay.routers import make_router

        router = make_router(self.router)
        plain = [p for p in self.policies if router.needs_lamps and not _lamps(p)]
        if plain:
            raise ValueError(
                f"router {router.name} reads LAMPS' gauges; policies {', '.join(plain)} run no "
                "LAMPS scheduler"
            )

    @property
    def loads(self) -> tuple[float, ...]:
        """The load axis swept: the user counts, else the rates."""
        return tuple(float(u) for u in self.users) if self.users else self.qps

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds to run (``seeds``, else the single ``seed``)."""
        return self.seeds or (self.seed,)


def arrivals_for(workload: Workload, config: ReplayConfig) -> dict[float, list[Arrival]]:
    """The arrivals of each rate for ``config.seed``; every policy replays the same list."""
    return {q: poisson_arrivals(workload, q, config.duration, config.seed) for q in config.qps}


def flow_of(workload: Workload, config: ReplayConfig, load: float) -> ArrivalFlow:
    """What one run replays: ``load`` users in a closed loop, or Poisson arrivals at a rate."""
    if config.users:
        return UserLoop(workload, int(load), config.seed, config.warm_prefix)
    arrivals = poisson_arrivals(workload, load, config.duration, config.seed)
    return flow_for(arrivals, config.warm_prefix)


def _import_everything() -> None:
    # Load every module a replay uses before the first job starts, so that sources edited
    # while a long replay runs cannot mix old and new code in one worker.
    apply_vllm_logs()  # vLLM warns once per scheduler built; a replay builds many
    import lamps.baselines.continuum
    import lamps.baselines.infercept
    import lamps.baselines.infercept_paper
    import lamps.baselines.lamps_authors
    import lamps.connector
    import lamps.replay.engine
    import lamps.replay.metrics
    import lamps.vllm.scheduler  # noqa: F401  (lamps.vllm imports it on first use only)


def run_one(
    workload: Workload,
    config: ReplayConfig,
    policy_name: str,
    qps: float,
    arrivals: list[Arrival] | ArrivalFlow,
    on_finish: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Replays one (policy, rate or users) for ``config.seed`` and returns its metrics row."""
    from lamps.replay.cluster import SimCluster
    from lamps.replay.engine import SimEngine
    from lamps.replay.metrics import SteadyWindow, summarize
    from lamps.replay.routers import make_router

    profile = get_profile(config.profile)
    settings = replace(get_engine_settings(config.engine), hidden_fraction=config.hidden_fraction)
    policies = [
        make_policy(
            policy_name,
            noise=config.noise,
            seed=config.seed,
            cost_config=profile.scheduler_cost_config(),
        )
        for _ in range(config.engines)
    ]
    policy = policies[0]
    window = SteadyWindow.for_duration(config.duration, config.warmup, config.cutoff)
    run_args: dict[str, Any] = {
        "settings": settings,
        "window_end": window.end,
        # A closed loop never runs out of work: it stops at the window's end.
        "stop_at": config.duration if config.users else config.drain * config.duration,
        "kv_bin_seconds": max(config.duration / 200, 1.0),
        "on_finish": on_finish,
    }
    engine: SimEngine | SimCluster
    if config.router is None:
        engine = SimEngine(profile, policy, arrivals, **run_args)
    else:
        router = make_router(config.router)
        engine = SimCluster(profile, policies, router, arrivals, **run_args)
    result = engine.run()
    row = summarize(
        result,
        qps,
        kv_bytes_per_token=profile.kv_bytes_per_token,
        window=window,
        extra={
            "noise": config.noise if policy.noisy else 0.0,
            "duration": config.duration,
            "profile": profile.name,
            "engine_settings": settings.describe(),
            "hidden_fraction": settings.hidden_fraction,
            "api_mode": policy.api_mode.value,
            "workload": workload.name,
            "seed": config.seed,
            "engine": EngineKind.SIM.value,
            "engines": config.engines,
            "router": config.router,
        },
    )
    if isinstance(engine, SimCluster):
        row.update(engine.cluster_row())
    if config.users:
        row.update(users_row(engine, result, config, int(qps)))
    return row


def users_row(engine: Any, result: Any, config: ReplayConfig, users: int) -> dict[str, Any]:
    """A closed-loop run's keys: ``users``, and the per-turn window metrics (their ``ttft_*``
    replace the per-conversation ones)."""
    from lamps.replay.turn_metrics import turn_metrics

    flow = engine.flow
    top = {a.index for a in getattr(flow, "started", flow.initial())}
    metrics = turn_metrics(
        result.records,
        start=config.warmup * config.duration,
        end=config.duration,
        top_level=top,
        swapped_bytes=float(result.policy_stats.get("swapped_bytes", 0.0)),
    )
    return {
        "users": users,
        "qps": None,
        "warm_prefix_tokens": flow.tokens.warm_tokens,
        "swap_in_tokens": engine.swapped_in_tokens,
        **metrics,
    }


def _lamps(policy_name: str) -> bool:
    """Whether the policy runs a LAMPS scheduler (which publishes memory over time)."""
    return hasattr(make_policy(policy_name).scheduler_cls, "lamps_memory_over_time")


def _run_job(args: tuple[Workload, ReplayConfig, str, float]) -> dict[str, Any]:
    workload, config, policy, load = args
    return run_one(workload, config, policy, load, flow_of(workload, config, load))


def jobs_of(config: ReplayConfig) -> list[tuple[ReplayConfig, str, tuple[float, ...]]]:
    """Every (single-seed config, policy, rates) chain of a replay; a chain runs its rates in
    ascending order (so it can stop once the policy is past saturation)."""
    rates = tuple(sorted(config.loads))
    return [
        (replace(config, seed=s, seeds=()), p, rates)
        for s in config.seed_list
        for p in config.policies
    ]


def saturated_row(policy: str, qps: float, config: ReplayConfig, workload: str) -> dict[str, Any]:
    """The row of a rate not run because the policy was already past saturation below it."""
    if config.users:
        return {
            "policy": policy,
            "users": int(qps),
            "qps": None,
            "seed": config.seed,
            "workload": workload,
            "skipped": "past saturation at fewer users",
            "ttft_p95": math.inf,
        }
    return {
        "policy": policy,
        "qps": qps,
        "seed": config.seed,
        "workload": workload,
        "skipped": "past saturation at a lower rate",
        "steady_ttft_p99": math.inf,
        "steady_normalized_latency_mean": math.inf,
    }


def _run_chain(args: tuple[Workload, ReplayConfig, str, tuple[float, ...]]) -> list[dict[str, Any]]:
    workload, config, policy, rates = args
    rows: list[dict[str, Any]] = []
    for i, qps in enumerate(rates):
        row = _run_job((workload, config, policy, qps))
        rows.append(row)
        metric = "ttft_p95" if config.users else "steady_ttft_p99"
        if config.stop_past is not None and not row[metric] <= config.stop_past:
            rows += [saturated_row(policy, q, config, workload.name) for q in rates[i + 1 :]]
            break
    return rows


def run_all(
    workload: Workload | Callable[[int], Workload],
    config: ReplayConfig,
    *,
    jobs: int = 1,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """All (policy, rate, seed) rows; ``workload`` may depend on the seed (a synthetic one).

    ``on_row(rows_so_far)`` is told of each finished chain (a policy's rates for one seed)."""
    _import_everything()
    combos = jobs_of(config)

    def load(seed: int) -> Workload:
        return workload(seed) if callable(workload) else workload

    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for cfg, p, rates in combos:
            rows += _run_chain((load(cfg.seed), cfg, p, rates))
            if on_row:
                on_row(rows)
        return rows
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_import_everything
    ) as pool:
        futures = [pool.submit(_run_chain, (load(c.seed), c, p, r)) for c, p, r in combos]
        for fut in cf.as_completed(futures):
            rows += fut.result()
            if on_row:
                on_row(rows)
    return rows
