"""What users run instead of LAMPS for agents, as replay policies over stock vLLM.

Both replay the stateless API (each turn a new request with its ``session_id``) on vLLM's own
FCFS scheduler:
- ``vllm-offload``: vLLM with its CPU KV offloading (``--kv-offloading-size``; the real
  ``OffloadingConnector`` scheduler side, ``lamps.baselines.vllm_offload``), its worker side
  simulated on the replay's clock (``lamps.replay.offload_worker``).
- ``thunderagent``: the ThunderAgent proxy's program admission in front of vLLM
  (``lamps.baselines.thunderagent``), its periodic check woken by ``ProxyTimer``.

Imported by ``lamps.replay.policies``, which registers them with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lamps.replay.modes import ApiMode
from lamps.replay.policy_classes import ReplayPolicy
from lamps.replay.policy_registry import register
from lamps.replay.profiles import GIB
from lamps.workloads import Arrival

if TYPE_CHECKING:  # vLLM is imported when a policy is run, not when the CLI lists them
    from vllm.config import KVTransferConfig
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.outputs import KVConnectorOutput

    from lamps.baselines.thunderagent import ThunderAgentScheduler
    from lamps.replay.engine_model import EngineModel
    from lamps.replay.offload_worker import SimulatedOffloadWorker
    from lamps.replay.profiles import GpuProfile


class VllmOffloadPolicy(ReplayPolicy):
    """Stock vLLM, stateless API, with its own CPU KV offloading (``OffloadingConnector``)."""

    name = "vllm-offload"
    api_mode: ApiMode = ApiMode.STATELESS

    def __init__(self, host_gib: float | None = None) -> None:
        super().__init__()
        if host_gib is not None and not host_gib > 0:
            raise ValueError(f"vllm-offload: host memory must be > 0 GiB, got {host_gib!r}")
        self.host_gib = host_gib
        self.worker: SimulatedOffloadWorker | None = None

    def kv_transfer_config(self, profile: GpuProfile) -> KVTransferConfig:
        """``--kv-offloading-size`` of the policy's GiB, else the profile's host memory."""
        from lamps.baselines.vllm_offload import offloading_transfer_config

        return offloading_transfer_config(self.host_gib or profile.host_memory_bytes / GIB)

    def simulated_worker(
        self, clock: Callable[[], float], model: EngineModel, block_size: int
    ) -> SimulatedOffloadWorker:
        """The connector's worker side on the replay's clock."""
        from lamps.replay.offload_worker import SimulatedOffloadWorker

        self.worker = SimulatedOffloadWorker(clock, model, block_size)
        return self.worker

    def stats(self) -> dict[str, Any]:
        return self.worker.stats() if self.worker is not None else {}


class ProxyTimer:
    """The proxy's clock as a replay worker: wakes an idle engine for its periodic check."""

    def __init__(self, scheduler: ThunderAgentScheduler) -> None:
        self._scheduler = scheduler
        self.blocks_started: dict[str, int] = {"out": 0, "in": 0}  # it moves no KV

    def step(self, out: SchedulerOutput) -> KVConnectorOutput | None:
        """No connector: nothing to report."""
        return None

    def busy_until(self) -> float:
        """No host link: never busy."""
        return 0.0

    def next_end(self) -> float | None:
        """The proxy's next check while it holds requests (None: nothing to wake for)."""
        return self._scheduler.next_wakeup()


class ThunderAgentPolicy(ReplayPolicy):
    """ThunderAgent's program admission (``router="tr"``) in front of stock vLLM, stateless."""

    name = "thunderagent"
    api_mode: ApiMode = ApiMode.STATELESS

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = dict(settings or {})
        self.gate: ThunderAgentScheduler | None = None

    @property
    def scheduler_cls(self) -> type[Scheduler]:
        from lamps.baselines.thunderagent import ThunderAgentScheduler

        return ThunderAgentScheduler

    def additional_config(self) -> dict[str, Any]:
        from lamps.baselines.thunderagent import CONFIG_KEY

        return {CONFIG_KEY: dict(self.settings)}

    def attach(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        from lamps.baselines.thunderagent import ThunderAgentScheduler

        super().attach(scheduler, clock)
        if not isinstance(scheduler, ThunderAgentScheduler):
            raise TypeError(f"thunderagent: expected its gate, got {type(scheduler).__name__}")
        scheduler.set_clock(clock)
        self.gate = scheduler

    def hints(self, arrival: Arrival, segment: int) -> dict[str, Any] | None:
        # The client tags its program, and releases it after its last turn.
        last = segment == len(arrival.request.segments) - 1
        return {"program_id": arrival.request_id, "release": last}

    def kv_transfer_config(self, profile: GpuProfile) -> KVTransferConfig | None:
        """Stock vLLM behind the proxy: no connector."""
        return None

    def simulated_worker(
        self, clock: Callable[[], float], model: EngineModel, block_size: int
    ) -> ProxyTimer:
        """The proxy's timer over the scheduler it gates (attached before the worker)."""
        if self.gate is None:
            raise RuntimeError("thunderagent: the timer needs the attached scheduler")
        return ProxyTimer(self.gate)

    def stats(self) -> dict[str, Any]:
        return self.gate.thunderagent_stats() if self.gate is not None else {}


register(
    "vllm-offload",
    lambda c: VllmOffloadPolicy(),
    "vLLM 0.32 with its CPU KV offloading (--kv-offloading-size = the profile's host memory; "
    "the real OffloadingConnector scheduler side, its worker simulated on the host link), "
    "stateless API mode, FCFS",
)
register(
    "thunderagent",
    lambda c: ThunderAgentPolicy(),
    "ThunderAgent (HaoKang-Timmy/ThunderAgent, lamps/baselines/thunderagent.py): its proxy's "
    "program admission by KV capacity, global waiting queue, pause/resume every 5 s, in front "
    "of stock vLLM FCFS, stateless API mode",
)
