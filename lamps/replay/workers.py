"""What a policy may run beside the scheduler in a replay: its own simulated worker.

By default ``SimEngine`` runs the LAMPS swap connector's simulated worker
(``lamps.replay.simulated_swap_worker``). A policy that brings another connector (vLLM's own
CPU offloading) or a process beside vLLM with a clock of its own (a proxy's periodic check)
implements ``WorkerPolicy``: the engine then builds vLLM with the policy's
``KVTransferConfig`` and steps the policy's ``ReplayWorker`` right after each ``schedule()``,
at the step's start time, passing what it returns to the scheduler in that step's
``KVConnectorOutput``. The engine's swap-stall model and idle wake-ups read the worker's links
(``busy_until``, ``next_end``) as they read the LAMPS worker's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from vllm.config import KVTransferConfig
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.outputs import KVConnectorOutput

    from lamps.replay.engine_model import EngineModel
    from lamps.replay.profiles import GpuProfile


class ReplayWorker(Protocol):
    """A simulated worker side on the replay's virtual clock."""

    blocks_started: dict[str, int]
    """KV blocks of every copy started, per direction (the engine's ``swapped_bytes``)."""

    def step(self, out: SchedulerOutput) -> KVConnectorOutput | None:
        """Runs the step's transfers; what has ended by now, as a worker reports it."""
        ...

    def busy_until(self) -> float:
        """When the host links will have ended every copy started so far."""
        ...

    def next_end(self) -> float | None:
        """When the engine must next step this worker though nothing runs (None: never)."""
        ...


@runtime_checkable
class WorkerPolicy(Protocol):
    """A replay policy that brings its own KV connector config and simulated worker."""

    def kv_transfer_config(self, profile: GpuProfile) -> KVTransferConfig | None:
        """The ``KVTransferConfig`` vLLM runs with under this policy (None: no connector)."""
        ...

    def simulated_worker(
        self, clock: Callable[[], float], model: EngineModel, block_size: int
    ) -> ReplayWorker:
        """The worker side the replay steps, on ``clock``, with the engine model's links."""
        ...
