"""The LAMPS swap connector: paused requests' KV copied to host memory and loaded at resume.

Named in vLLM's config as `kv_connector="LampsSwapConnector"`,
`kv_connector_module_path="lamps.connector"` (the earlier path `lamps.vllm.swap` still works).
Laid out as vLLM's offloading connector: a thin facade over a scheduler side and a worker side.

- `swap_connector`: `LampsSwapConnector`, the facade vLLM instantiates in both roles; it
  declares the capabilities the pause mechanism uses (`lamps.mechanism.capabilities`);
- `config`: its settings (`kv_connector_extra_config`) and the host pool's size;
- `messages`: what crosses between the sides (jobs, both metadata types, the `SwapWorker`
  protocol a worker side implements);
- `scheduler_side` and its `records`: the per-request copy state machine;
- `session_copies`: the copies of HTTP sessions' parked turns;
- `worker_side`: the worker on the swap engine (`lamps.swap`).

The replay runs the real scheduler side with a worker on its virtual clock
(`lamps.replay.simulated_swap_worker`).
"""

from lamps.connector.config import SwapConfig, host_pool_blocks
from lamps.connector.messages import (
    LampsSwapMetadata,
    LampsSwapWorkerMetadata,
    SwapInJob,
    SwapOutJob,
    SwapWorker,
)
from lamps.connector.records import SwapOutDecision
from lamps.connector.swap_connector import LampsSwapConnector

__all__ = [
    "LampsSwapConnector",
    "LampsSwapMetadata",
    "LampsSwapWorkerMetadata",
    "SwapConfig",
    "SwapInJob",
    "SwapOutDecision",
    "SwapOutJob",
    "SwapWorker",
    "host_pool_blocks",
]
