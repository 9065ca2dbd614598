"""Simulated GPU profiles: a cost model plus the memory that bounds the KV cache."""

from __future__ import annotations

from dataclasses import dataclass

from lamps import CostModel

GIB = 1024**3


@dataclass(frozen=True)
class GpuProfile:
    """A model on a GPU: iteration cost, KV bytes per token and the KV capacity they leave."""

    name: str
    cost_model: str
    memory_bytes: int
    weight_bytes: int
    num_layers: int
    num_kv_heads: int
    head_size: int
    host_memory_bytes: int = 64 * GIB
    block_size: int = 16
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 2048

    def __post_init__(self) -> None:
        layout = 2 * self.num_layers * self.num_kv_heads * self.head_size * 2
        if layout != self.cost().kv_bytes_per_token:
            raise ValueError(
                f"profile {self.name!r}: fp16 KV layout gives {layout} bytes/token, the cost "
                f"model {self.cost_model!r} says {self.cost().kv_bytes_per_token}"
            )

    def cost(self) -> CostModel:
        """The profile's cost model (iteration time, KV bytes per token, link bandwidth)."""
        return CostModel.profile(self.cost_model)

    def num_blocks(self) -> int:
        """KV blocks that fit in the memory left after the weights."""
        kv_bytes = self.memory_bytes - self.weight_bytes
        per_block = self.cost().kv_bytes_per_token * self.block_size
        blocks = int(kv_bytes // per_block)
        if blocks < 1:
            raise ValueError(f"profile {self.name!r}: weights leave no room for the KV cache")
        return blocks

    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return self.num_blocks() * self.block_size


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
    # Vicuna-13B fp16 (~26 GB of weights) over two A100s limited to 40 GB each.
    "vicuna-13b-2xa100": GpuProfile(
        "vicuna-13b-2xa100", "vicuna-13b-2xa100", 80 * GIB, 26_000_000_000, 40, 40, 128
    ),
}


def get_profile(name: str) -> GpuProfile:
    """The named profile; ValueError listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
