"""Swap engine throughput against the plain-torch alternative, in the same run.

Run: pytest benchmarks/bench_swap.py --benchmark-group-by=group --benchmark-columns=mean,ops
Each group times one request's swap-out + swap-in round trip (64 blocks of a 16-layer model,
32 MiB each way) with the LAMPS engine's CPU backend and with torch `index_select` +
`index_copy_` into a host pool of the same layout; the table's ratio column is the comparison.
The CUDA group (engine vs a single pinned-memory cudaMemcpyAsync of a 2 MiB batch) runs only
where a GPU is usable.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.worker.utils import allocate_kv_cache

from lamps import swap
from lamps.harness import attention_spec, layered_kv_cache_config
from lamps.swap import SwapEngine

NUM_LAYERS = 16
NUM_BLOCKS = 192
REQUEST_BLOCKS = 64
SPEC = attention_spec(block_size=16, num_kv_heads=8, head_size=64, dtype="float16")


def kv_caches(device: str = "cpu") -> dict[str, torch.Tensor]:
    """vLLM's own per-layer [B, H, N, C] views (LBHNC), filled with random data."""
    config = layered_kv_cache_config(SPEC, NUM_BLOCKS, NUM_LAYERS, KVCacheLayout.LBHNC)
    caches = allocate_kv_cache(config, torch.device(device), KVCacheLayout.LBHNC)
    for cache in caches.values():
        cache.normal_()
    return caches


def request_blocks(pattern: str) -> list[int]:
    if pattern == "contiguous":
        return list(range(100, 100 + REQUEST_BLOCKS))
    gen = torch.Generator().manual_seed(0)
    return torch.randperm(NUM_BLOCKS, generator=gen)[:REQUEST_BLOCKS].tolist()


def engine_round_trip(caches: dict[str, torch.Tensor], blocks: list[int]) -> Callable[[], None]:
    engine = SwapEngine(caches, num_host_blocks=REQUEST_BLOCKS)

    def run() -> None:
        engine.swap_out("r", blocks)
        engine.wait("r")
        engine.swap_in("r", blocks)
        engine.wait("r")
        done = engine.poll()
        assert [c.status for c in done] == ["done", "done"]

    return run


def torch_round_trip(caches: dict[str, torch.Tensor], blocks: list[int]) -> Callable[[], None]:
    host = [torch.empty((REQUEST_BLOCKS, *c.shape[1:]), dtype=c.dtype) for c in caches.values()]
    device_idx = torch.tensor(blocks)
    host_idx = torch.arange(REQUEST_BLOCKS)

    def run() -> None:
        for cache, pool in zip(caches.values(), host, strict=True):
            pool.index_copy_(0, host_idx, cache.index_select(0, device_idx))
        for cache, pool in zip(caches.values(), host, strict=True):
            cache.index_copy_(0, device_idx, pool.index_select(0, host_idx))

    return run


@pytest.mark.parametrize("pattern", ["contiguous", "scattered"])
@pytest.mark.parametrize("impl", ["lamps-cpu-engine", "torch-index-copy"])
def test_cpu_round_trip(benchmark, impl: str, pattern: str) -> None:
    caches = kv_caches()
    blocks = request_blocks(pattern)
    before = [c[blocks].clone() for c in caches.values()]
    make = engine_round_trip if impl == "lamps-cpu-engine" else torch_round_trip
    benchmark.group = f"cpu round trip, {pattern} blocks"
    bytes_each_way = REQUEST_BLOCKS * NUM_LAYERS * SPEC.page_size_bytes
    benchmark.extra_info["bytes_each_way"] = bytes_each_way
    benchmark.pedantic(make(caches, blocks), rounds=20, warmup_rounds=2)
    for cache, want in zip(caches.values(), before, strict=True):
        assert torch.equal(cache[blocks], want)
    if benchmark.stats is not None:  # None under --benchmark-disable
        mean = benchmark.stats["mean"]
        benchmark.extra_info["GB_per_s_both_ways"] = 2 * bytes_each_way / mean / 1e9


@pytest.mark.skipif(
    "cuda" not in swap.available_backends(),
    reason=f"CUDA bandwidth benchmark needs a usable GPU: {swap.backend_status()['cuda']}",
)
@pytest.mark.parametrize("impl", ["lamps-cuda-engine", "pinned-cudaMemcpyAsync"])
def test_cuda_swap_out_bandwidth(benchmark, impl: str) -> None:
    caches = kv_caches("cuda")
    # 2 MiB batch: 4 contiguous blocks of every layer (16 layers x 4 x 32 KiB).
    blocks = list(range(8, 12))
    batch_bytes = len(blocks) * NUM_LAYERS * SPEC.page_size_bytes
    benchmark.group = "cuda swap-out, 2 MiB batch"
    benchmark.extra_info["bytes"] = batch_bytes
    if impl == "lamps-cuda-engine":
        engine = SwapEngine(caches, num_host_blocks=len(blocks))

        def run() -> None:
            engine.swap_out("r", blocks)
            engine.wait("r")
            engine.poll()
            engine.release("r")

    else:
        flat = [c[blocks[0] : blocks[-1] + 1] for c in caches.values()]
        pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in flat]
        stream = torch.cuda.Stream()

        def run() -> None:
            with torch.cuda.stream(stream):
                for src, dst in zip(flat, pinned, strict=True):
                    dst.copy_(src, non_blocking=True)
            stream.synchronize()

    benchmark.pedantic(run, rounds=50, warmup_rounds=5)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB_per_s"] = batch_bytes / benchmark.stats["mean"] / 1e9
