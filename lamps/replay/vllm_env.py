"""Builds vLLM's real scheduler classes in-process on a CPU, sized by a simulated GPU profile."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from vllm.config import (
    CacheConfig,
    DeviceConfig,
    KVTransferConfig,
    ModelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.structured_output import StructuredOutputManager

from lamps.replay.profiles import GIB, GpuProfile

VOCAB_SIZE = 50400
"""GPT-J's vocabulary; token ids only feed the prefix-cache hashes."""


@functools.cache
def _model_dir() -> Path:
    # The scheduler never loads weights; ModelConfig only needs a config.json to read.
    path = Path(tempfile.mkdtemp(prefix="lamps-replay-model-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def _model_config(max_model_len: int) -> ModelConfig:
    path = _model_dir() / f"len{max_model_len}"
    path.mkdir(exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": max_model_len,
        "torch_dtype": "float16",
        "rms_norm_eps": 1e-5,
    }
    (path / "config.json").write_text(json.dumps(config))
    return ModelConfig(
        model=str(path), skip_tokenizer_init=True, max_model_len=max_model_len, dtype="float16"
    )


def model_len_for(context_tokens: int, block_size: int) -> int:
    """A max_model_len that fits ``context_tokens`` plus the sampled token, block-aligned."""
    need = context_tokens + 1
    return max(2048, -(-need // block_size) * block_size)


def build_vllm_config(
    profile: GpuProfile,
    max_model_len: int,
    *,
    policy: str = "fcfs",
    scheduler_cls: type[Scheduler] | None = None,
    additional_config: dict[str, Any] | None = None,
    swap: bool = False,
) -> VllmConfig:
    """VllmConfig for a CPU-hosted scheduler with the profile's batch limits."""
    scheduler_config = SchedulerConfig(
        max_model_len=max_model_len,
        is_encoder_decoder=False,
        max_num_seqs=profile.max_num_seqs,
        max_num_batched_tokens=profile.max_num_batched_tokens,
        enable_chunked_prefill=True,
        policy=policy,
        async_scheduling=False,
        scheduler_cls=scheduler_cls,
    )
    cache_config = CacheConfig(block_size=profile.block_size, enable_prefix_caching=True)
    cache_config.num_gpu_blocks = profile.num_blocks()
    transfer = None
    if swap:
        # The LAMPS swap connector moves paused sessions' KV to a host pool; the replay
        # simulates its worker side (transfer completions after their link time).
        transfer = KVTransferConfig(
            kv_connector="LampsSwapConnector",
            kv_connector_module_path="lamps.vllm.swap",
            kv_role="kv_both",
            kv_connector_extra_config={"host_pool_gib": profile.host_memory_bytes / GIB},
        )
    return VllmConfig(
        kv_transfer_config=transfer,
        model_config=_model_config(max_model_len),
        cache_config=cache_config,
        scheduler_config=scheduler_config,
        device_config=DeviceConfig("cpu"),
        additional_config=additional_config or {},
    )


def build_kv_cache_config(profile: GpuProfile) -> KVCacheConfig:
    """One full-attention group with the profile's block count (the model's KV layout)."""
    spec = FullAttentionSpec(
        block_size=profile.block_size,
        num_kv_heads=profile.num_kv_heads,
        head_size=profile.head_size,
        dtype=torch.float16,
    )
    layers = [f"model.layers.{i}.self_attn.attn" for i in range(profile.num_layers)]
    return KVCacheConfig(
        num_blocks=profile.num_blocks(),
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(layers, spec)],
    )


def build_scheduler(
    cls: type[Scheduler], vllm_config: VllmConfig, profile: GpuProfile
) -> Scheduler:
    """Constructs ``cls`` the way EngineCore does (same arguments)."""
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=build_kv_cache_config(profile),
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=profile.block_size,
        log_stats=False,
    )


def request_block_hasher(vllm_config: VllmConfig):
    """The prefix-cache block hasher EngineCore attaches to every Request."""
    hash_fn = get_hash_fn_by_name(vllm_config.cache_config.prefix_caching_hash_algo)
    init_none_hash(hash_fn)
    return get_request_block_hasher(vllm_config.cache_config.block_size, hash_fn)
