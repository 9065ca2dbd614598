"""Shared fixtures: a tiny random-weight Llama on disk and real vLLM schedulers on CPU.

Reusable by any test session: `tiny_llama_dir` (session-scoped path), `make_vllm_scheduler`
(builds any vLLM Scheduler subclass with a small KV cache), `make_request` and
`model_runner_output` (one decode token per scheduled request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest


def write_tiny_llama(path: Path, seed: int = 0) -> Path:
    """Write the replay's tiny random-weight Llama (vocab 512, 2 layers) to `path`."""
    # Imported here: lamps.replay imports vLLM, which the core tests do not need.
    from lamps.replay.real import write_tiny_llama as write

    return write(path, max_len=2048, seed=seed)


def layered_kv_cache_config(spec: Any, num_blocks: int, num_layers: int, layout: Any) -> Any:
    """A KVCacheConfig of `num_layers` full-attention layers sharing one tensor in `layout`."""
    from vllm.v1.kv_cache_interface import (
        KVCacheConfig,
        KVCacheGroupSpec,
        KVCacheTensor,
        compute_layout_strides,
    )

    layers = [f"model.layers.{i}.self_attn.attn" for i in range(num_layers)]
    layer_stride, block_stride, *_ = compute_layout_strides(spec, num_blocks, num_layers, layout)
    return KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[
            KVCacheTensor(
                size=spec.page_size_bytes * num_layers * num_blocks,
                layers=layers,
                layer_stride=layer_stride,
                block_stride=block_stride,
            )
        ],
        kv_cache_groups=[KVCacheGroupSpec(layers, spec)],
    )


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama written once per test session."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def build_vllm_scheduler(
    scheduler_cls: type,
    model_dir: Path,
    *,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 2048,
    max_model_len: int = 2048,
    num_blocks: int = 1000,
    block_size: int = 16,
    enable_prefix_caching: bool = True,
    async_scheduling: bool = False,
    additional_config: dict[str, Any] | None = None,
    long_prefill_token_threshold: int = 0,
    enable_chunked_prefill: bool = True,
    scheduling_policy: str = "fcfs",
    kv_transfer_config: Any = None,
) -> Any:
    """A real vLLM scheduler of `scheduler_cls` on CPU with a `num_blocks`-block KV cache.

    `kv_transfer_config`: a vLLM KVTransferConfig, to run the scheduler with a KV connector.
    """
    import torch
    from vllm.config import (
        CacheConfig,
        DeviceConfig,
        ModelConfig,
        SchedulerConfig,
        VllmConfig,
    )
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVCacheConfig,
        KVCacheGroupSpec,
    )
    from vllm.v1.structured_output import StructuredOutputManager

    if not (isinstance(scheduler_cls, type) and issubclass(scheduler_cls, Scheduler)):
        raise TypeError(f"scheduler_cls must be a vLLM Scheduler subclass, got {scheduler_cls!r}")
    model_config = ModelConfig(
        model=str(model_dir),
        tokenizer=str(model_dir),
        skip_tokenizer_init=True,
        dtype="float32",
        max_model_len=max_model_len,
        seed=0,
    )
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        long_prefill_token_threshold=long_prefill_token_threshold,
        enable_chunked_prefill=enable_chunked_prefill,
        async_scheduling=async_scheduling,
        is_encoder_decoder=False,
        policy=scheduling_policy,
    )
    cache_config = CacheConfig(
        block_size=block_size,
        gpu_memory_utilization=0.9,
        cache_dtype="auto",
        enable_prefix_caching=enable_prefix_caching,
    )
    vllm_config = VllmConfig(
        model_config=model_config,
        cache_config=cache_config,
        scheduler_config=scheduler_config,
        device_config=DeviceConfig("cpu"),
        kv_transfer_config=kv_transfer_config,
        additional_config=additional_config or {},
    )
    cache_config.num_gpu_blocks = num_blocks
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],  # the scheduler never touches device memory
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"],
                FullAttentionSpec(
                    block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32
                ),
            )
        ],
    )
    return scheduler_cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        log_stats=False,
    )


@pytest.fixture
def make_vllm_scheduler(tiny_llama_dir: Path) -> Callable[..., Any]:
    """Factory: make_vllm_scheduler(SchedulerClass, **build_vllm_scheduler kwargs)."""

    def make(scheduler_cls: type, **kwargs: Any) -> Any:
        return build_vllm_scheduler(scheduler_cls, tiny_llama_dir, **kwargs)

    return make


_arrival = iter(range(1, 1 << 62))


def make_request(
    request_id: str,
    prompt_token_ids: list[int],
    *,
    max_tokens: int = 16,
    extra_args: dict[str, Any] | None = None,
    resumable: bool = False,
    arrival_time: float | None = None,
    block_size: int = 16,
) -> Any:
    """A vLLM Request with prefix-cache block hashing, as the engine core builds it."""
    from vllm import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args=extra_args)
    return Request(
        request_id=request_id,
        prompt_token_ids=list(prompt_token_ids),
        sampling_params=params,
        pooling_params=None,
        arrival_time=float(next(_arrival)) if arrival_time is None else arrival_time,
        block_hasher=get_request_block_hasher(block_size, hash_fn),
        resumable=resumable,
    )


def model_runner_output(
    scheduler_output: Any, sampling_req_ids: Iterable[str], token_id: int = 7
) -> Any:
    """A ModelRunnerOutput sampling `token_id` for the requests in `sampling_req_ids`."""
    from vllm.v1.outputs import ModelRunnerOutput

    sampling = set(sampling_req_ids)
    req_ids = list(scheduler_output.num_scheduled_tokens)
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
        sampled_token_ids=[[token_id] if rid in sampling else [] for rid in req_ids],
        logprobs=None,
        prompt_logprobs_dict={},
        pooler_output=[],
    )


def run_step(scheduler: Any, token_id: int = 7) -> tuple[Any, Any]:
    """One engine step: schedule(), sample a token for requests past their prefill, update."""
    out = scheduler.schedule()
    # A request samples once this step's tokens complete its prefill (not a partial chunk).
    sampling = [
        rid
        for rid in out.num_scheduled_tokens
        if rid in scheduler.requests and not scheduler.requests[rid].is_prefill_chunk
    ]
    engine_outputs = scheduler.update_from_output(out, model_runner_output(out, sampling, token_id))
    return out, engine_outputs
