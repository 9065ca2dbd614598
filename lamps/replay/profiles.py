"""Simulated GPU profiles: a model on a GPU, its engine clock and the memory bounding its KV.

Each profile carries two separate things: the *engine model* (``EngineModel``, the simulated
GPU's clock, from public measurements) and the *scheduler cost model* that LAMPS and InferCept
are configured with, which stays what those schedulers use on a real GPU. The cost models live
in one registry, the C++ core's (``lamps.CostModel.profiles()``, ``csrc/include/lamps/
cost_model.hpp``): every profile here names one (a test checks that each resolves and agrees
with the profile's KV layout); explicit coefficients are for tests and one-off models.

Sources of the engine coefficients (README, "Calibration"):
- bandwidths and peak FLOPs: the vendors' data sheets (A100-40GB HBM2 1,555 GB/s, A100-80GB
  2,039 GB/s, H100 SXM 3,350 GB/s; 312 / 989 dense fp16 TFLOPs; PCIe 4.0 / 5.0 x16 about 25 /
  50 GB/s per direction for pinned copies);
- efficiencies and per-token costs: ``microsoft/vidur``'s per-operation profiles
  (``data/profiling/compute/{a100,h100}/meta-llama/{Llama-2-7b-hf,Meta-Llama-3-8B}/mlp.csv``
  and the attention profile of commit e2d00e9, ``data/profiling/a100/attention.csv``,
  A100-80GB): decode attention reads KV at 1,652 GB/s (81% of peak), weights stream at 71-72%
  of peak, linear layers cost 0.0645 ms/token on an A100 (Llama-2-7B, 256-2,048 tokens,
  0.269x that on an H100), prefill attention 2.37e-7 ms per (query, key) pair per layer at a
  4,096-wide query (69 effective TFLOPs);
- the per-step CPU overhead (2 ms): InferCept's GPT-J fit (c = 10 ms) less the weights' read;
- tensor parallelism (``llama31-70b-8xh100``): the GPUs are modelled as one of 8x the bandwidth,
  compute, host links and memory, which is exact for a perfectly split model (every layer's
  heads and weights divided by 8; Llama-3.1-70B's 8 KV heads give each GPU one), plus the
  all-reduces a split model needs: two per layer (after attention and after the MLP) of
  ``tokens x hidden x 2`` bytes, each costing 0.0347 ms + 4.78e-9 ms/byte, a least-squares fit
  of vidur's NCCL measurements on 8 H100s of a DGX (``data/profiling/network/h100_dgx/
  all_reduce.csv``, 2 KB-64 MB, median times, within 10% above 10 MB) without vidur's 0.02 ms CPU
  launch overhead (vLLM replays decode steps as CUDA graphs). vLLM's custom all-reduce is faster
  than NCCL for small messages, so this prices a decode step's communication on the high side.

Prefill attention on the H100 is vidur's A100 coefficient scaled by peak FLOPs (the same
efficiency, 22% of peak); FlashAttention-3 reaches more at long lengths, so a 100k-token
prefill (about 12 s of attention for Llama-3.1-8B) is priced on the high side too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lamps import CostModel
from lamps.replay.engine_model import EngineModel

GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    """One GPU and its host link, as the engine model sees them."""

    name: str
    hbm_bytes_per_second: float
    link_bytes_per_second: float
    weight_read_efficiency: float
    kv_read_efficiency: float
    prefill_ms_per_token_pair: float  # per layer, at a 4,096-wide query
    linear_scale: float  # per-token linear-layer time relative to an A100
    allreduce_ms: float = 0.0  # tensor parallel: one all-reduce's fixed cost
    allreduce_ms_per_byte: float = 0.0  # and its cost per byte reduced


VIDUR_KV_READ_EFFICIENCY = 1652e9 / 2039e9
VIDUR_PREFILL_MS_PER_PAIR_A100 = 2.373e-7

A100_40GB = Hardware(
    "A100-40GB", 1555e9, 25e9, 0.712, VIDUR_KV_READ_EFFICIENCY, VIDUR_PREFILL_MS_PER_PAIR_A100, 1.0
)
H100_80GB = Hardware(
    "H100-SXM-80GB",
    3350e9,
    50e9,
    0.72,
    VIDUR_KV_READ_EFFICIENCY,
    VIDUR_PREFILL_MS_PER_PAIR_A100 * 312 / 989,
    0.269,
)

H100_DGX_ALLREDUCE_MS = 0.0347
H100_DGX_ALLREDUCE_MS_PER_BYTE = 4.78e-9
"""vidur's NCCL all-reduce on 8 H100s (h100_dgx/all_reduce.csv), least squares over 2 KB-64 MB."""

EIGHT_H100_80GB = Hardware(
    "8xH100-SXM-80GB (tensor parallel)",
    8 * 3350e9,
    8 * 50e9,  # each GPU's own PCIe 5.0 x16 link to the host
    0.72,
    VIDUR_KV_READ_EFFICIENCY,
    H100_80GB.prefill_ms_per_token_pair / 8,
    H100_80GB.linear_scale / 8,
    allreduce_ms=H100_DGX_ALLREDUCE_MS,
    allreduce_ms_per_byte=H100_DGX_ALLREDUCE_MS_PER_BYTE,
)

VIDUR_A_MS_PER_TOKEN_7B = 0.0645
"""Linear layers of Llama-2-7B (6.74e9 parameters) per token on an A100, vidur's profile."""


@dataclass(frozen=True)
class EngineSettings:
    """The engine configuration a replay runs: vLLM 0.32's defaults, or the paper's fork."""

    name: str = "vllm-0.32"
    enable_prefix_caching: bool = True
    max_num_batched_tokens: int | None = None  # None: the profile's (vLLM's default there)
    max_num_seqs: int | None = None  # None: the profile's
    hidden_fraction: float = 1.0

    def describe(self) -> str:
        """One line for the results and the README."""
        return (
            f"{self.name}: prefix caching {'on' if self.enable_prefix_caching else 'off'}, "
            f"token budget {self.max_num_batched_tokens or 'default'}, max sequences "
            f"{self.max_num_seqs or 'default'}, swap hidden fraction {self.hidden_fraction:g}"
        )


ENGINE_SETTINGS = {
    "vllm-0.32": EngineSettings(),
    # The 2024 vLLM fork InferCept and LAMPS ran, for every policy alike: no automatic prefix
    # caching (added to vLLM in 0.4), 384 tokens per step (`mlimit`, InferCept's
    # scheduler_v2.py 741-745 and the authors' 921-924, the budget of every iteration there)
    # and that vLLM's default of 256 sequences (vLLM 0.32 requires budget >= sequences).
    "paper": EngineSettings(
        "paper", enable_prefix_caching=False, max_num_batched_tokens=384, max_num_seqs=256
    ),
}


@dataclass(frozen=True)
class GpuProfile:
    """A model on a GPU: engine clock, scheduler cost model, and the KV capacity they leave."""

    name: str
    cost_model: str | Mapping[str, float]  # a lamps.CostModel profile name, or coefficients
    memory_bytes: int
    weight_bytes: int
    num_layers: int
    num_kv_heads: int
    head_size: int
    host_memory_bytes: int = 64 * GIB
    block_size: int = 16
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 2048
    hardware: Hardware = A100_40GB
    parameters: float = 6.05e9
    q_dim: int = 4096
    overhead_ms: float = 2.0
    max_model_len: int = 2048

    def __post_init__(self) -> None:
        layout = 2 * self.num_layers * self.num_kv_heads * self.head_size * 2
        if layout != self.cost().kv_bytes_per_token:
            raise ValueError(
                f"profile {self.name!r}: fp16 KV layout gives {layout} bytes/token, the cost "
                f"model {self.cost_model!r} says {self.cost().kv_bytes_per_token}"
            )

    @property
    def kv_bytes_per_token(self) -> int:
        """fp16 K and V of every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_size * 2

    def cost(self) -> CostModel:
        """The scheduler cost model (LAMPS's and InferCept's own estimates)."""
        if isinstance(self.cost_model, str):
            return CostModel.profile(self.cost_model)
        return CostModel(**self.cost_model, name=self.name)

    def scheduler_cost_config(self) -> dict[str, Any]:
        """The ``{"profile": ...}`` or ``{"cost_model": {...}}`` a scheduler is configured with."""
        if isinstance(self.cost_model, str):
            return {"profile": self.cost_model}
        return {"cost_model": dict(self.cost_model)}

    def engine_model(self, hidden_fraction: float = 1.0) -> EngineModel:
        """The simulated GPU's clock for this model (see ``lamps.replay.engine_model``)."""
        hw = self.hardware
        scale = self.parameters / 6.74e9  # vidur's per-token cost was fitted on 6.74e9
        return EngineModel(
            a_ms_per_token=VIDUR_A_MS_PER_TOKEN_7B * hw.linear_scale * scale,
            b_ms=1.3 * hw.linear_scale * scale,
            weights_ms=1e3
            * self.weight_bytes
            / (hw.hbm_bytes_per_second * hw.weight_read_efficiency),
            overhead_ms=self.overhead_ms,
            kv_bytes_per_token=self.kv_bytes_per_token,
            hbm_bytes_per_second=hw.hbm_bytes_per_second,
            kv_read_efficiency=hw.kv_read_efficiency,
            prefill_ms_per_token_pair=hw.prefill_ms_per_token_pair,
            num_layers=self.num_layers,
            q_dim=self.q_dim,
            link_bytes_per_second=hw.link_bytes_per_second,
            hidden_fraction=hidden_fraction,
            # Two all-reduces per layer of tokens x hidden fp16 values (Llama: hidden = q_dim).
            comm_ms=2 * self.num_layers * hw.allreduce_ms,
            comm_ms_per_token=2 * self.num_layers * 2 * self.q_dim * hw.allreduce_ms_per_byte,
        )

    def num_blocks(self) -> int:
        """KV blocks that fit in the memory left after the weights."""
        kv_bytes = self.memory_bytes - self.weight_bytes
        per_block = self.kv_bytes_per_token * self.block_size
        blocks = int(kv_bytes // per_block)
        if blocks < 1:
            raise ValueError(f"profile {self.name!r}: weights leave no room for the KV cache")
        return blocks

    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return self.num_blocks() * self.block_size


# Llama-3.1-8B on one H100 SXM 80 GB at vLLM's default gpu_memory_utilization 0.9, for the
# agent trace's long contexts (max_model_len 131,072; the trace stays below 64k).
# Its scheduler cost model (no published fit exists) takes the engine's: a = the linear
# layers' per-token slope, c = CPU overhead + reading the weights (lamps.CostModel profile).
_LLAMA31_8B_H100 = GpuProfile(
    "llama31-8b-h100",
    "llama31-8b-h100",
    int(0.9 * 80 * GIB),
    16_060_000_000,
    32,
    8,
    128,
    host_memory_bytes=128 * GIB,
    max_num_batched_tokens=8192,  # vLLM's server default on GPUs of >= 70 GiB
    hardware=H100_80GB,
    parameters=8.03e9,
    q_dim=4096,
    max_model_len=65536,
)

# GPT-J-6B: 6.05e9 fp16 parameters; 28 layers x 4096 hidden -> 2*28*4096*2 = 458,752 KV bytes
# per token (the core's cost model carries that number). The paper limits the GPU to 40 GB for
# weights plus KV cache. Swapped KV goes to a host pool of `host_memory_bytes`.
PROFILES: dict[str, GpuProfile] = {
    "gptj-6b-a100": GpuProfile(
        "gptj-6b-a100", "gptj-6b-a100", 40 * GIB, 12_100_000_000, 28, 16, 256
    ),
    "infercept-gptj-6b-a100": GpuProfile(
        "infercept-gptj-6b-a100", "infercept-gptj-6b-a100", 40 * GIB, 12_100_000_000, 28, 16, 256
    ),
    # Vicuna-13B fp16 (~26 GB of weights) over two A100s limited to 40 GB each; the engine
    # model treats the pair as one GPU of twice the bandwidth (tensor parallel, no all-reduce).
    "vicuna-13b-2xa100": GpuProfile(
        "vicuna-13b-2xa100",
        "vicuna-13b-2xa100",
        80 * GIB,
        26_000_000_000,
        40,
        40,
        128,
        hardware=Hardware(
            "2xA100-40GB",
            2 * 1555e9,
            50e9,
            0.712,
            VIDUR_KV_READ_EFFICIENCY,
            VIDUR_PREFILL_MS_PER_PAIR_A100 / 2,
            0.5,
        ),
        parameters=13.0e9,
        q_dim=5120,
    ),
    "llama31-8b-h100": _LLAMA31_8B_H100,
    # The same at a 128k context (max_model_len 131,072), for the coding-agent traces (inputs to
    # 130k tokens): about 467k tokens of KV, 3.6 full-length conversations.
    "llama31-8b-h100-128k": replace(
        _LLAMA31_8B_H100, name="llama31-8b-h100-128k", max_model_len=131072
    ),
    # Llama-3.1-70B on 8 H100 SXM 80 GB, tensor parallel 8, 128k context: 80 layers, 8 KV heads
    # of 128 -> 327,680 KV bytes per token (40,960 on each GPU); 70.55e9 parameters (141.1 GB
    # fp16, 17.6 GB per GPU). 0.9 x 80 GiB per GPU less the weights leaves about 1.45M tokens of
    # KV in all; the host pool is 64 GiB per GPU. See the module docstring for what is modelled
    # of the parallelism. Its scheduler cost model takes the engine's, as the 8B's does (the
    # core's llama31-70b-8xh100, derived in cost_model.hpp; the same doubles this module computed
    # before they moved there).
    "llama31-70b-8xh100": GpuProfile(
        "llama31-70b-8xh100",
        "llama31-70b-8xh100",
        8 * int(0.9 * 80 * GIB),
        141_100_000_000,
        80,
        8,
        128,
        host_memory_bytes=8 * 64 * GIB,
        max_num_batched_tokens=8192,
        hardware=EIGHT_H100_80GB,
        parameters=70.55e9,
        q_dim=8192,
        max_model_len=131072,
    ),
}


def get_profile(name: str) -> GpuProfile:
    """The named profile; ValueError listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None


def get_engine_settings(name: str) -> EngineSettings:
    """The named engine settings; ValueError listing the known ones otherwise."""
    try:
        return ENGINE_SETTINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown engine settings {name!r}; known: {sorted(ENGINE_SETTINGS)}"
        ) from None
