"""Runs every (policy, rate) combination of a replay with identical arrivals per rate."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamps.replay.policies import POLICY_NAMES, make_policy
from lamps.replay.profiles import get_profile
from lamps.workloads import Arrival, Workload, poisson_arrivals


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay: policies x rates over one workload, one seed (defaults: `lamps replay`'s,
    sized to finish within two minutes on a 2-core machine)."""

    policies: tuple[str, ...] = ("vllm", "infercept", "lamps")
    qps: tuple[float, ...] = (5.0, 6.0)
    duration: float = 300.0
    profile: str = "gptj-6b-a100"
    noise: float = 0.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("policies: at least one policy is needed")
        for p in self.policies:
            if p not in POLICY_NAMES:
                raise ValueError(
                    f"policies: unknown policy {p!r}; known: {', '.join(POLICY_NAMES)}"
                )
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies: duplicates in {self.policies}")
        if not self.qps:
            raise ValueError("qps: at least one rate is needed")
        for q in self.qps:
            if not (math.isfinite(q) and q > 0):
                raise ValueError(f"qps: rates must be finite and > 0, got {q}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration: must be finite and > 0, got {self.duration}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise: must be finite and >= 0, got {self.noise}")
        get_profile(self.profile)


def arrivals_for(workload: Workload, config: ReplayConfig) -> dict[float, list[Arrival]]:
    """The arrivals of each rate; every policy replays the same list."""
    return {q: poisson_arrivals(workload, q, config.duration, config.seed) for q in config.qps}


def source_digest() -> str:
    """SHA-256 (12 hex) of the lamps Python sources a replay ran (results provenance)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _import_everything() -> None:
    # Load every module a replay uses before the first job starts, so that sources edited
    # while a long replay runs cannot mix old and new code in one worker.
    import lamps.baselines.continuum
    import lamps.baselines.infercept
    import lamps.baselines.infercept_paper
    import lamps.baselines.lamps_authors
    import lamps.replay.engine
    import lamps.replay.metrics
    import lamps.vllm
    import lamps.vllm.swap  # noqa: F401


def run_one(
    workload: Workload,
    config: ReplayConfig,
    policy_name: str,
    qps: float,
    arrivals: list[Arrival],
    on_finish: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Replays one (policy, rate) and returns its metrics row."""
    from lamps.replay.engine import SimEngine
    from lamps.replay.metrics import summarize

    profile = get_profile(config.profile)
    policy = make_policy(
        policy_name, noise=config.noise, seed=config.seed, cost_model=profile.cost_model
    )
    engine = SimEngine(
        profile,
        policy,
        arrivals,
        kv_bin_seconds=max(config.duration / 200, 1.0),
        on_finish=on_finish,
    )
    result = engine.run()
    noise = config.noise if policy_name in ("lamps", "lamps-no-rank") else 0.0
    return summarize(
        result,
        qps,
        kv_bytes_per_token=profile.cost().kv_bytes_per_token,
        extra={
            "noise": noise,
            "duration": config.duration,
            "profile": profile.name,
            "workload": workload.name,
            "seed": config.seed,
            "engine": "sim",
            "source_digest": source_digest(),
        },
    )


def _run_job(args: tuple[Workload, ReplayConfig, str, float]) -> dict[str, Any]:
    workload, config, policy, qps = args
    arrivals = arrivals_for(workload, ReplayConfig(**{**config.__dict__, "qps": (qps,)}))[qps]
    return run_one(workload, config, policy, qps, arrivals)


def run_all(
    workload: Workload,
    config: ReplayConfig,
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """All (policy, rate) rows; ``progress(n)`` is told of each finished request (or run),
    ``on_row(rows_so_far)`` of each finished run."""
    _import_everything()
    arrivals = arrivals_for(workload, config)
    combos = [(p, q) for q in config.qps for p in config.policies]
    if jobs <= 1:
        rows = []
        for p, q in combos:
            tick = (lambda _rec: progress(1)) if progress else None
            rows.append(run_one(workload, config, p, q, arrivals[q], on_finish=tick))
            if on_row:
                on_row(rows)
        return rows
    rows_by_key: dict[tuple[str, float], dict[str, Any]] = {}
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_import_everything
    ) as pool:
        futures = {pool.submit(_run_job, (workload, config, p, q)): (p, q) for p, q in combos}
        for fut in cf.as_completed(futures):
            rows_by_key[futures[fut]] = fut.result()
            if progress:
                progress(len(arrivals[futures[fut][1]]))
            if on_row:
                on_row([rows_by_key[c] for c in combos if c in rows_by_key])
    return [rows_by_key[c] for c in combos]


def total_requests(workload: Workload, config: ReplayConfig) -> int:
    """Requests the whole replay processes (for a progress bar)."""
    return sum(len(a) for a in arrivals_for(workload, config).values()) * len(config.policies)
