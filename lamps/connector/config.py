"""The swap connector's settings (`kv_connector_extra_config`) and the host pool's size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.v1.kv_cache_interface import KVCacheConfig

GIB = 1 << 30


@dataclass(frozen=True)
class SwapConfig:
    """Settings from `kv_connector_extra_config`."""

    host_pool_gib: float = 4.0
    swap_budget_tokens_per_step: int = 0  # 0 = unlimited
    backend: str = "auto"

    @classmethod
    def from_extra_config(cls, extra: dict[str, Any]) -> SwapConfig:
        """Parse and check the connector's extra config; ValueError names the bad key."""
        known = {"host_pool_gib", "swap_budget_tokens_per_step", "backend"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"kv_connector_extra_config: unknown key(s) {unknown} for LampsSwapConnector "
                f"(known: {sorted(known)})"
            )
        gib = extra.get("host_pool_gib", cls.host_pool_gib)
        if isinstance(gib, bool) or not isinstance(gib, int | float) or not math.isfinite(gib):
            raise ValueError(f"host_pool_gib: must be a finite number (got {gib!r})")
        if gib <= 0:
            raise ValueError(f"host_pool_gib: must be > 0 (got {gib!r})")
        budget = extra.get("swap_budget_tokens_per_step", cls.swap_budget_tokens_per_step)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(
                f"swap_budget_tokens_per_step: must be an int >= 0, 0 = unlimited (got {budget!r})"
            )
        backend = extra.get("backend", cls.backend)
        if backend not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend: must be 'auto', 'cpu' or 'cuda' (got {backend!r})")
        return cls(float(gib), budget, backend)


def host_pool_blocks(kv_cache_config: KVCacheConfig, host_pool_gib: float) -> int:
    """Host blocks that fit in `host_pool_gib` (both sides compute the same number)."""
    group = kv_cache_config.kv_cache_groups[0]
    block_bytes: int = group.kv_cache_spec.page_size_bytes * len(group.layer_names)
    return max(int(host_pool_gib * GIB) // block_bytes, 0)
