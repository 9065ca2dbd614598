"""The replay policies' classes: what each policy runs, its configuration, hints and API mode.

Each policy owns its scheduler class, its configuration (``additional_config``), the hints
its requests carry (with its own prediction noise) and its API mode (``session``: a paused
streaming session; ``stateless``: every turn a new request, as over the OpenAI API).
``lamps.replay.policies`` registers them by name (``lamps.replay.policy_registry``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from lamps.baselines.continuum_ttl import TtlRule
from lamps.replay.modes import ApiMode
from lamps.workloads import Arrival

if TYPE_CHECKING:  # vLLM is imported when a policy is run, not when the CLI lists them
    from vllm.v1.core.sched.scheduler import Scheduler


class ReplayPolicy:
    """Base: vLLM's own Scheduler with streaming sessions (API calls preserve the KV cache)."""

    name = "vllm-preserve"
    api_mode: ApiMode = ApiMode.SESSION
    queue_policy = "fcfs"
    swap = False
    noisy = False  # whether --noise applies to its predictions

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None

    @property
    def sessions(self) -> bool:
        """Whether API calls pause a session (False: every turn is a new request)."""
        return self.api_mode == ApiMode.SESSION

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        """The scheduler class EngineCore would be configured with."""
        from vllm.v1.core.sched.scheduler import Scheduler

        vllm_scheduler: type[Scheduler] = Scheduler
        return vllm_scheduler

    def additional_config(self) -> dict[str, Any]:
        """VllmConfig.additional_config for this policy."""
        return {}

    def attach(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        """Called once the scheduler exists, before any request is added."""
        self.scheduler = scheduler

    def attached(self) -> Scheduler:
        """The scheduler `attach` was given; RuntimeError before it was called."""
        if self.scheduler is None:
            raise RuntimeError(f"policy {self.name!r}: no scheduler attached yet")
        return self.scheduler

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        """``SamplingParams.extra_args["lamps"]`` for a segment's chunk, or None."""
        return None

    def resume_arrival_time(self, arrival: Arrival, now: float) -> float:
        """arrival_time of a resumed chunk: vLLM stamps each streaming chunk on arrival."""
        return now

    def after_iteration(self, now: float) -> None:
        """Hook run after each iteration's outputs are processed."""

    def stats(self) -> dict[str, Any]:
        """Policy-specific counters for the results."""
        return {}


class VllmPolicy(ReplayPolicy):
    """Stock vLLM: an API call ends the request; the continuation re-enters FCFS at the back."""

    name = "vllm"
    api_mode: ApiMode = ApiMode.STATELESS


class VllmPreservePolicy(ReplayPolicy):
    """Stock vLLM streaming sessions: the KV cache stays on the GPU during every call."""

    name = "vllm-preserve"


class InferCeptPolicy(ReplayPolicy):
    """InferCept as its code does it (`lamps.baselines.infercept`): FCFS by original arrival,
    per-iteration discards, passive budgeted swap under memory pressure; ``paper``: as its
    paper describes it (`lamps.baselines.infercept_paper`)."""

    name = "infercept"
    queue_policy = "priority"
    swap = True

    def __init__(self, cost_config: dict[str, Any], *, paper: bool = False) -> None:
        super().__init__()
        self.cost_config = cost_config
        self.paper = paper
        if paper:
            self.name = "infercept-paper"

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        if self.paper:
            from lamps.baselines.infercept_paper import InferCeptPaperScheduler

            return InferCeptPaperScheduler
        from lamps.baselines.infercept import InferCeptScheduler

        return InferCeptScheduler

    def additional_config(self) -> dict[str, Any]:
        return {"infercept": dict(self.cost_config)}

    def attach(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        super().attach(scheduler, clock)
        scheduler.set_clock(clock)

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        # InferCept is given each call's duration (its benchmarks pass it in the request).
        seg = arrival.request.segments[segment]
        return {"predicted_api_seconds": seg.api_seconds if seg.has_api else 0.0}

    def resume_arrival_time(self, arrival: Arrival, now: float) -> float:
        return arrival.time

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.attached().infercept_stats()
        return stats


class LampsPolicy(ReplayPolicy):
    """LAMPS plug-in scheduler, fed trace predictions with optional relative Gaussian noise."""

    swap = True

    def __init__(
        self,
        name: str,
        cost_config: dict[str, Any],
        *,
        noise: float = 0.0,
        ranking: bool = True,
        seed: int = 0,
        switches: Mapping[str, Any] | None = None,
        oracle: bool = False,
    ) -> None:
        super().__init__()
        if not (noise >= 0 and np.isfinite(noise)):
            raise ValueError(f"noise must be finite and >= 0, got {noise}")
        self.name = name
        self.oracle = oracle
        self.noise = noise
        self.noisy = noise > 0
        self.ranking = ranking
        self.seed = seed
        self.cost_config = cost_config
        self.switches = dict(switches or {})

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        from lamps.vllm import LampsSyncScheduler

        return LampsSyncScheduler

    def additional_config(self) -> dict[str, Any]:
        # The periodic log line is for live servers; a replay reports its own table.
        return {
            "lamps": {
                **self.cost_config,
                "ranking": self.ranking,
                "log_interval_s": 0.0,
                **self.switches,
            }
        }

    def attach(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        super().attach(scheduler, clock)
        scheduler.set_clock(clock)

    def _noisy(self, value: float, arrival: Arrival, segment: int, which: int) -> float:
        if self.noise == 0:
            return value
        rng = np.random.default_rng((self.seed, arrival.index, segment, which))
        return max(0.0, value * (1.0 + self.noise * float(rng.standard_normal())))

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        seg = arrival.request.segments[segment]
        out = max(1, round(self._noisy(seg.output_tokens, arrival, segment, 0)))
        api = self._noisy(seg.api_seconds, arrival, segment, 1) if seg.has_api else 0.0
        hints = {
            "tool": arrival.request.kind,
            "predicted_output_tokens": out,
            "predicted_api_seconds": api,
            "api_return_tokens": seg.return_tokens if seg.has_api else 0,
        }
        if self.oracle:
            # Knows the rest of the request too; the others learn it from finished requests.
            later = arrival.request.segments[segment + 1 :]
            hints["remaining_calls"] = sum(1 for s in later if s.has_api)
        return hints

    def stats(self) -> dict[str, Any]:
        return dict(self.attached().lamps_stats.as_dict())


class LampsStatelessPolicy(LampsPolicy):
    """LAMPS over the OpenAI API: every turn a new request of its session (`session_id`).

    The finished turn is parked until the session's next request (`lamps.vllm.sessions`); the
    last turn says `session_end`, as a client ending its session does.
    """

    api_mode: ApiMode = ApiMode.STATELESS

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        hints = super().hints(arrival, segment)
        if hints is not None and segment == len(arrival.request.segments) - 1:
            hints["session_end"] = True
        return hints


class LampsAuthorsPolicy(ReplayPolicy):
    """LAMPS as its authors' code does it (`lamps.baselines.lamps_authors`), fed the trace's
    values plus Gaussian noise as its benchmark adds it (`fixed_final_tput_bench_real.py`
    118-119: `max(1e-9, api + N(0, noise * api))`, `max(1, out + N(0, noise * out))`)."""

    name = "lamps-authors"
    queue_policy = "priority"

    def __init__(self, *, noise: float = 0.0, seed: int = 0, cost_config: dict[str, Any]) -> None:
        super().__init__()
        if not (noise >= 0 and np.isfinite(noise)):
            raise ValueError(f"noise must be finite and >= 0, got {noise}")
        self.noise, self.seed, self.cost_config = noise, seed, cost_config
        self.noisy = noise > 0

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        from lamps.baselines.lamps_authors import LampsAuthorsScheduler

        return LampsAuthorsScheduler

    def additional_config(self) -> dict[str, Any]:
        return {"lamps_authors": dict(self.cost_config)}

    def resume_arrival_time(self, arrival: Arrival, now: float) -> float:
        return arrival.time  # a resumed call keeps its sequence group's arrival (FCFS running)

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        seg = arrival.request.segments[segment]
        rng = np.random.default_rng((self.seed, arrival.index, segment))
        out, api = float(seg.output_tokens), seg.api_seconds if seg.has_api else 0.0
        if self.noise:
            out = max(1.0, out + float(rng.normal(0.0, self.noise * out)))
            api = max(1e-9, api + float(rng.normal(0.0, self.noise * api))) if api else 0.0
        return {
            "predicted_output_tokens": max(1, round(out)),
            "predicted_api_seconds": api,
            "api_return_tokens": seg.return_tokens if seg.has_api else 0,
        }

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.attached().authors_stats()
        return stats


class ContinuumPolicy(ReplayPolicy):
    """Continuum (`lamps.baselines.continuum`) over the stateless API, as it is deployed: each
    turn a new request carrying the whole context, the finished turn pinned for a TTL."""

    api_mode: ApiMode = ApiMode.STATELESS
    queue_policy = "fcfs"

    def __init__(self, name: str, ttl: TtlRule, cost_config: dict[str, Any]) -> None:
        super().__init__()
        self.name, self.ttl, self.cost_config = name, ttl, cost_config

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        from lamps.baselines.continuum import ContinuumScheduler

        return ContinuumScheduler

    def additional_config(self) -> dict[str, Any]:
        return {"continuum": {"ttl": self.ttl, **self.cost_config}}

    def attach(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        super().attach(scheduler, clock)
        scheduler.set_clock(clock)

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        # The program (Continuum's job id), its tool, and whether this is its last step.
        last = segment == len(arrival.request.segments) - 1
        return {"program": arrival.request_id, "tool": arrival.request.kind, "last": last}

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.attached().continuum_stats()
        return stats
