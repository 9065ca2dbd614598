"""Builds what a replay engine runs for one policy on a GPU profile.

vLLM's config and scheduler (``lamps.harness``) sized by the profile and the engine settings,
the KV connector a policy needs, the worker side the replay simulates for it, and the settings
the scheduler actually runs with (read back, for the results). The LAMPS swap connector moves
paused sessions' KV to a host pool; the replay simulates its worker side (transfer completions
after their link time). A policy may bring its own connector and simulated worker
(``lamps.replay.workers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vllm.v1.core.sched.scheduler import Scheduler

from lamps.harness import (
    attention_spec,
    build_scheduler,
    build_vllm_config,
    plain_kv_cache_config,
    scheduler_model_dir,
    swap_connector_config,
)
from lamps.replay.policies import ReplayPolicy
from lamps.replay.profiles import GIB, EngineSettings, GpuProfile
from lamps.replay.simulated_swap_worker import SimulatedSwapWorker
from lamps.replay.tokens import VOCAB_SIZE
from lamps.replay.workers import ReplayWorker, WorkerPolicy

if TYPE_CHECKING:
    from vllm.config import KVTransferConfig, VllmConfig

    from lamps.replay.engine_model import EngineModel


def kv_transfer_for(policy: ReplayPolicy, profile: GpuProfile) -> KVTransferConfig | None:
    """The policy's own connector config, the LAMPS swap connector's when it swaps, or None."""
    if isinstance(policy, WorkerPolicy):
        return policy.kv_transfer_config(profile)
    if policy.swap:
        return swap_connector_config(host_pool_gib=profile.host_memory_bytes / GIB)
    return None


def policy_vllm_config(
    profile: GpuProfile,
    policy: ReplayPolicy,
    settings: EngineSettings,
    max_model_len: int,
    transfer: KVTransferConfig | None,
) -> VllmConfig:
    """The VllmConfig the policy's scheduler runs with on the profile."""
    return build_vllm_config(
        scheduler_model_dir(max_model_len, VOCAB_SIZE),
        max_model_len=max_model_len,
        dtype="float16",
        max_num_seqs=settings.max_num_seqs or profile.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens or profile.max_num_batched_tokens,
        num_blocks=profile.num_blocks(),
        block_size=profile.block_size,
        enable_prefix_caching=settings.enable_prefix_caching,
        policy=policy.queue_policy,
        scheduler_cls=policy.scheduler_cls,
        additional_config=policy.additional_config(),
        kv_transfer_config=transfer,
    )


def build_policy_scheduler(
    profile: GpuProfile, policy: ReplayPolicy, vllm_config: VllmConfig
) -> Scheduler:
    """The policy's scheduler over one full-attention group with the profile's KV layout."""
    spec = attention_spec(
        block_size=profile.block_size,
        num_kv_heads=profile.num_kv_heads,
        head_size=profile.head_size,
        dtype="float16",
    )
    kv_cache_config = plain_kv_cache_config(spec, profile.num_blocks(), profile.num_layers)
    return build_scheduler(vllm_config, kv_cache_config, scheduler_cls=policy.scheduler_cls)


def swap_worker_for(
    policy: ReplayPolicy, clock: Callable[[], float], model: EngineModel, block_size: int
) -> SimulatedSwapWorker | ReplayWorker:
    """The policy's own simulated worker, else the LAMPS swap connector's on the link model."""
    if isinstance(policy, WorkerPolicy):
        return policy.simulated_worker(clock, model, block_size)
    return SimulatedSwapWorker(clock, lambda blocks: model.swap_seconds(blocks * block_size))


def settings_ran(
    scheduler: Scheduler,
    config: VllmConfig,
    profile: GpuProfile,
    settings: EngineSettings,
    host_pool: bool,
) -> dict[str, Any]:
    """The engine settings this policy's scheduler actually runs with, read back from it,
    so that a results row shows what its policy ran (equal terms can be checked)."""
    return {
        "token_budget": int(scheduler.max_num_scheduled_tokens),
        "max_num_seqs": int(config.scheduler_config.max_num_seqs),
        "prefix_caching": bool(config.cache_config.enable_prefix_caching),
        "kv_capacity_tokens": profile.num_blocks() * profile.block_size,
        "block_size": profile.block_size,
        "host_swap_gib": profile.host_memory_bytes / GIB if host_pool else 0.0,
        "hidden_fraction": settings.hidden_fraction,
    }
