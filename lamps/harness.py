"""Builds vLLM's real scheduler classes in-process on CPU, without a GPU.

Model configs from a tiny model directory, ``VllmConfig``, KV cache configs (plain, and layered
over real tensors), the scheduler as ``EngineCore`` constructs it, a settable clock for it,
requests with prefix-cache block hashing and ``ModelRunnerOutput``s; the tiny model writers
(``lamps.tiny_models``: the random-weight Llama of the real-engine tests and ``lamps replay
--engine real``) are re-exported. Shared by the tests, the benchmarks and the replay; vLLM and
torch are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamps.tiny_models import (
    CHAT_ROLES,
    CHAT_TEMPLATE,
    TINY_LLAMA_VOCAB,
    scheduler_model_dir,
    tiny_word_ids,
    write_tiny_chat_tokenizer,
    write_tiny_llama,
)

if TYPE_CHECKING:
    from vllm.config import KVTransferConfig, ModelConfig, VllmConfig
    from vllm.v1.core.kv_cache_utils import BlockHash
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig
    from vllm.v1.kv_cache_layout import KVCacheLayout
    from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
    from vllm.v1.request import Request

    BlockHasher = Callable[[Request], list[BlockHash]]

__all__ = [
    "CHAT_ROLES",
    "CHAT_TEMPLATE",
    "TINY_LLAMA_VOCAB",
    "SettableClock",
    "attention_spec",
    "block_hasher",
    "build_scheduler",
    "build_vllm_config",
    "layered_kv_cache_config",
    "make_request",
    "model_config",
    "model_runner_output",
    "plain_kv_cache_config",
    "run_step",
    "sampling_requests",
    "scheduler_model_dir",
    "swap_connector_config",
    "tiny_word_ids",
    "write_tiny_chat_tokenizer",
    "write_tiny_llama",
]

# -- configs ------------------------------------------------------------------------------------


def model_config(
    model_dir: Path | str, *, max_model_len: int = 2048, dtype: str = "float32"
) -> ModelConfig:
    """vLLM's ModelConfig for ``model_dir`` (seed 0), without a tokenizer."""
    from vllm.config import ModelConfig

    return ModelConfig(
        model=str(model_dir),
        skip_tokenizer_init=True,
        dtype=dtype,
        max_model_len=max_model_len,
        seed=0,
    )


def swap_connector_config(**extra_config: Any) -> KVTransferConfig:
    """The KVTransferConfig that loads the LAMPS swap connector (``host_pool_gib=``, ...)."""
    from vllm.config import KVTransferConfig

    return KVTransferConfig(
        kv_connector="LampsSwapConnector",
        kv_connector_module_path="lamps.connector",
        kv_role="kv_both",
        kv_connector_extra_config=extra_config,
    )


def build_vllm_config(
    model_dir: Path | str,
    *,
    max_model_len: int = 2048,
    dtype: str = "float32",
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 2048,
    num_blocks: int = 1000,
    block_size: int = 16,
    enable_prefix_caching: bool = True,
    async_scheduling: bool = False,
    policy: str = "fcfs",
    scheduler_cls: type[Scheduler] | str | None = None,
    additional_config: dict[str, Any] | None = None,
    kv_transfer_config: KVTransferConfig | None = None,
    long_prefill_token_threshold: int = 0,
    enable_chunked_prefill: bool = True,
) -> VllmConfig:
    """A CPU VllmConfig whose KV cache has ``num_blocks`` blocks."""
    from vllm.config import CacheConfig, DeviceConfig, SchedulerConfig, VllmConfig

    scheduler_config = SchedulerConfig(
        max_model_len=max_model_len,
        is_encoder_decoder=False,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        long_prefill_token_threshold=long_prefill_token_threshold,
        enable_chunked_prefill=enable_chunked_prefill,
        policy=policy,
        async_scheduling=async_scheduling,
        scheduler_cls=scheduler_cls,
    )
    cache_config = CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching)
    config = VllmConfig(
        model_config=model_config(model_dir, max_model_len=max_model_len, dtype=dtype),
        cache_config=cache_config,
        scheduler_config=scheduler_config,
        device_config=DeviceConfig("cpu"),
        kv_transfer_config=kv_transfer_config,
        additional_config=additional_config or {},
    )
    cache_config.num_gpu_blocks = num_blocks
    return config


def attention_spec(
    *, block_size: int = 16, num_kv_heads: int = 1, head_size: int = 1, dtype: str = "float32"
) -> FullAttentionSpec:
    """One full-attention layer's KV layout."""
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    return FullAttentionSpec(
        block_size=block_size,
        num_kv_heads=num_kv_heads,
        head_size=head_size,
        dtype=getattr(torch, dtype),
    )


def _layer_names(num_layers: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.attn" for i in range(num_layers)]


def plain_kv_cache_config(
    spec: FullAttentionSpec, num_blocks: int, num_layers: int = 1
) -> KVCacheConfig:
    """One group of ``num_layers`` layers and no tensors: enough for the scheduler side."""
    from vllm.v1.kv_cache_interface import KVCacheConfig, KVCacheGroupSpec

    return KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(_layer_names(num_layers), spec)],
    )


def layered_kv_cache_config(
    spec: FullAttentionSpec, num_blocks: int, num_layers: int, layout: KVCacheLayout
) -> KVCacheConfig:
    """``num_layers`` full-attention layers sharing one tensor in ``layout`` (allocatable)."""
    from vllm.v1.kv_cache_interface import (
        KVCacheConfig,
        KVCacheGroupSpec,
        KVCacheTensor,
        compute_layout_strides,
    )

    layers = _layer_names(num_layers)
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


# -- the scheduler ------------------------------------------------------------------------------


def build_scheduler(
    vllm_config: VllmConfig,
    kv_cache_config: KVCacheConfig | None = None,
    *,
    scheduler_cls: type[Scheduler] | None = None,
    log_stats: bool = False,
) -> Scheduler:
    """The scheduler EngineCore would build (class from the config unless given).

    `log_stats=True` makes it build the `SchedulerStats` a server's stat loggers receive.
    """
    from vllm.v1.core.kv_cache_utils import resolve_kv_cache_block_sizes
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.structured_output import StructuredOutputManager

    cls = scheduler_cls or vllm_config.scheduler_config.get_scheduler_cls()
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        raise TypeError(f"scheduler_cls must be a vLLM Scheduler subclass, got {cls!r}")
    cache = vllm_config.cache_config
    if kv_cache_config is None:
        assert cache.num_gpu_blocks is not None
        spec = attention_spec(block_size=cache.block_size)
        kv_cache_config = plain_kv_cache_config(spec, cache.num_gpu_blocks)
    block_size, hash_block_size = resolve_kv_cache_block_sizes(kv_cache_config, vllm_config)
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        hash_block_size=hash_block_size,
        log_stats=log_stats,
    )


class SettableClock:
    """A virtual clock for a scheduler's ``set_clock``: reads ``now``, which the test sets."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- requests and model outputs -----------------------------------------------------------------


@functools.cache
def block_hasher(block_size: int = 16, hash_algo: str = "sha256") -> BlockHasher:
    """The prefix-cache block hasher EngineCore attaches to every Request."""
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    hash_fn = get_hash_fn_by_name(hash_algo)
    init_none_hash(hash_fn)
    hasher: BlockHasher = get_request_block_hasher(block_size, hash_fn)
    return hasher


_arrival = itertools.count(1)


def make_request(
    request_id: str,
    prompt_token_ids: Iterable[int],
    *,
    max_tokens: int = 16,
    extra_args: dict[str, Any] | None = None,
    resumable: bool = False,
    arrival_time: float | None = None,
    block_size: int = 16,
    hasher: BlockHasher | None = None,
    session_id: str | None = None,
) -> Request:
    """A vLLM Request (EOS ignored) hashed for the prefix cache, as EngineCore builds it.

    `session_id` is what vLLM's OpenAI server sets from the `session_id` body field or the
    `X-Session-ID` header.
    """
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args=extra_args)
    return Request(
        request_id=request_id,
        prompt_token_ids=list(prompt_token_ids),
        sampling_params=params,
        pooling_params=None,
        arrival_time=float(next(_arrival)) if arrival_time is None else arrival_time,
        block_hasher=hasher or block_hasher(block_size),
        resumable=resumable,
        session_id=session_id,
    )


def model_runner_output(
    scheduler_output: SchedulerOutput,
    sampled: Mapping[str, int] | Iterable[str],
    token_id: int = 7,
    *,
    kv_connector_output: KVConnectorOutput | None = None,
) -> ModelRunnerOutput:
    """One token per sampling request (a mapping gives each its own, else ``token_id``)."""
    from vllm.v1.outputs import ModelRunnerOutput

    from lamps.mechanism.compat import runner_output_ids

    tokens = sampled if isinstance(sampled, Mapping) else dict.fromkeys(sampled, token_id)
    req_ids = list(scheduler_output.num_scheduled_tokens)
    return ModelRunnerOutput(
        **runner_output_ids(req_ids),
        sampled_token_ids=[[tokens[rid]] if rid in tokens else [] for rid in req_ids],
        kv_connector_output=kv_connector_output,
    )


def sampling_requests(scheduler: Scheduler, scheduler_output: SchedulerOutput) -> list[str]:
    """The scheduled requests whose prefill this step completes (they sample a token)."""
    requests = scheduler.requests
    return [
        rid
        for rid in scheduler_output.num_scheduled_tokens
        if rid in requests and not requests[rid].is_prefill_chunk
    ]


def run_step(
    scheduler: Scheduler, token_id: int = 7
) -> tuple[SchedulerOutput, dict[int, EngineCoreOutputs]]:
    """One engine step: schedule(), sample ``token_id`` past each prefill, update_from_output."""
    out = scheduler.schedule()
    runner_output = model_runner_output(out, sampling_requests(scheduler, out), token_id)
    return out, scheduler.update_from_output(out, runner_output)
