"""The swap engine's CPU backend end to end, over KV caches shaped as vLLM allocates them."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
)
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.worker.utils import allocate_kv_cache

from lamps import swap
from lamps.harness import layered_kv_cache_config
from lamps.swap import (
    PoolExhaustedError,
    SwapEngine,
    SwapError,
    UnknownRequestError,
    layer_spec,
)

NUM_LAYERS = 3
NUM_BLOCKS = 48
BLOCK_SIZE = 16
NUM_KV_HEADS = 2
HEAD_SIZE = 32


def vllm_kv_caches(
    layout: KVCacheLayout, dtype: torch.dtype = torch.float16, num_blocks: int = NUM_BLOCKS
) -> dict[str, torch.Tensor]:
    """Per-layer [B, H, N, C] views over one buffer, built by vLLM's own allocator."""
    spec = FullAttentionSpec(
        block_size=BLOCK_SIZE, num_kv_heads=NUM_KV_HEADS, head_size=HEAD_SIZE, dtype=dtype
    )
    config = layered_kv_cache_config(spec, num_blocks, NUM_LAYERS, layout)
    caches = allocate_kv_cache(config, torch.device("cpu"), layout)
    gen = torch.Generator().manual_seed(0)
    for cache in caches.values():
        cache.copy_(torch.randn(cache.shape, generator=gen).to(dtype))
    return caches


def snapshot(caches: dict[str, torch.Tensor], block_ids: list[int], block_dim: int = 0) -> list:
    return [c.index_select(block_dim, torch.tensor(block_ids)).clone() for c in caches.values()]


def drain(engine: SwapEngine, count: int, timeout: float = 20.0) -> list[swap.Completion]:
    done: list[swap.Completion] = []
    deadline = time.monotonic() + timeout
    while len(done) < count and time.monotonic() < deadline:
        done += engine.poll()
        time.sleep(0.001)
    assert len(done) == count, f"only {len(done)} of {count} transfers finished"
    return done


def round_trip(engine: SwapEngine, request_id: str, source: list[int], target: list[int]) -> None:
    engine.swap_out(request_id, source)
    engine.wait(request_id)
    [out] = engine.poll()
    assert (out.request_id, out.direction, out.status) == (request_id, "out", "done")
    engine.swap_in(request_id, target)
    engine.wait(request_id)
    [back] = engine.poll()
    assert (back.direction, back.status) == ("in", "done")


def test_cpu_backend_always_available() -> None:
    status = swap.backend_status()
    assert status["cpu"] is None
    assert "cpu" in swap.available_backends()
    # "cuda" is listed exactly when usable; otherwise the reason says why.
    assert ("cuda" in swap.available_backends()) == (status["cuda"] is None)
    if status["cuda"] is not None:
        assert "CUDA" in status["cuda"] or "cuda" in status["cuda"]


@pytest.mark.parametrize("layout", list(KVCacheLayout), ids=lambda layout: layout.name)
def test_round_trip_is_bit_exact_for_every_vllm_layout(layout: KVCacheLayout) -> None:
    caches = vllm_kv_caches(layout)
    engine = SwapEngine(caches, num_host_blocks=16)
    source, target = [5, 6, 7, 30, 2], [40, 41, 9, 10, 11]
    before = snapshot(caches, source)
    untouched = snapshot(caches, [0, 1])
    round_trip(engine, "r", source, target)
    for got, want in zip(snapshot(caches, target), before, strict=True):
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    for got, want in zip(snapshot(caches, [0, 1]), untouched, strict=True):
        assert torch.equal(got, want)
    assert engine.num_free_host_blocks == 16
    stats = engine.stats()
    assert stats.bytes_out == stats.bytes_in == 5 * engine.host_block_bytes
    assert engine.host_block_bytes == NUM_LAYERS * NUM_KV_HEADS * BLOCK_SIZE * 2 * HEAD_SIZE * 2


def test_contiguous_blocks_coalesce_into_one_copy_per_layer() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=16)
    engine.swap_out("r", list(range(10, 18)))
    engine.wait("r")
    assert engine.stats().copy_calls == NUM_LAYERS


@pytest.mark.parametrize(
    ("shape", "num_blocks", "block_dim"),
    [
        ((2, NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE), NUM_BLOCKS, 1),  # FlashAttention
        ((NUM_BLOCKS, 2, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE), NUM_BLOCKS, 0),  # FlashInfer
        ((NUM_BLOCKS, NUM_KV_HEADS, BLOCK_SIZE, 2 * HEAD_SIZE), None, 0),  # CPU attention
    ],
    ids=["kv-major", "block-major", "cpu-attn"],
)
def test_legacy_backend_shapes(
    shape: tuple[int, ...], num_blocks: int | None, block_dim: int
) -> None:
    gen = torch.Generator().manual_seed(1)
    caches = [torch.randn(shape, generator=gen, dtype=torch.float32) for _ in range(2)]
    spec = layer_spec(caches[0], num_blocks=num_blocks)
    assert spec.num_blocks == NUM_BLOCKS
    assert spec.block_bytes == 2 * BLOCK_SIZE * NUM_KV_HEADS * HEAD_SIZE * 4
    assert spec.num_runs == (2 if block_dim == 1 else 1)
    engine = SwapEngine(caches, num_host_blocks=8, num_blocks=num_blocks)
    source, target = [3, 4, 20], [0, 1, 2]
    before = snapshot(dict(enumerate(caches)), source, block_dim)
    round_trip(engine, "r", source, target)
    after = snapshot(dict(enumerate(caches)), target, block_dim)
    for got, want in zip(after, before, strict=True):
        assert torch.equal(got, want)


def test_kv_major_layout_is_two_fragments_a_plane_apart() -> None:
    kv = torch.zeros(2, NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE, dtype=torch.bfloat16)
    spec = layer_spec(kv, num_blocks=NUM_BLOCKS)
    page = BLOCK_SIZE * NUM_KV_HEADS * HEAD_SIZE * 2
    assert (spec.num_runs, spec.run_bytes, spec.run_stride, spec.block_stride) == (
        2,
        page,
        NUM_BLOCKS * page,
        page,
    )


def test_many_concurrent_requests_round_trip() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC, num_blocks=256)
    engine = SwapEngine(caches, num_host_blocks=256)
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(256, generator=gen).tolist()
    requests = {f"req-{i}": perm[i * 8 : (i + 1) * 8] for i in range(32)}
    before = {rid: snapshot(caches, blocks) for rid, blocks in requests.items()}
    for rid, blocks in requests.items():
        engine.swap_out(rid, blocks)
    assert all(c.status == "done" for c in drain(engine, len(requests)))
    assert engine.num_free_host_blocks == 0
    for cache in caches.values():
        cache.zero_()
    # Back in reverse order, each request into its own blocks reversed.
    for rid in reversed(list(requests)):
        engine.swap_in(rid, requests[rid][::-1])
    assert all(c.status == "done" for c in drain(engine, len(requests)))
    for rid, blocks in requests.items():
        for got, want in zip(snapshot(caches, blocks[::-1]), before[rid], strict=True):
            assert torch.equal(got, want)
    assert engine.num_free_host_blocks == 256


def test_partial_swap_in_skips_a_cached_prefix() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=8)
    before = snapshot(caches, [7, 8])
    engine.swap_out("r", [5, 6, 7, 8])
    engine.wait("r")
    engine.poll()
    engine.swap_in("r", [20, 21], first_block=2)
    engine.wait("r")
    assert engine.poll()[0].status == "done"
    for got, want in zip(snapshot(caches, [20, 21]), before, strict=True):
        assert torch.equal(got, want)
    assert not engine.has_copy("r")


def test_pool_exhaustion_is_a_clear_error_and_allocates_nothing() -> None:
    engine = SwapEngine(vllm_kv_caches(KVCacheLayout.LBHNC), num_host_blocks=4)
    engine.swap_out("a", [0, 1, 2])
    with pytest.raises(PoolExhaustedError, match="need 2 blocks, 1 of 4 free"):
        engine.swap_out("b", [3, 4])
    assert isinstance(PoolExhaustedError("x"), MemoryError)
    assert not engine.in_flight("b")
    engine.wait("a")
    assert engine.num_free_host_blocks == 1
    assert engine.release("a")
    assert engine.num_free_host_blocks == 4
    assert not engine.release("a")


def test_abort_during_transfer_returns_blocks_only_when_the_copier_lets_go() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=8)
    engine.set_paused(True)
    engine.swap_out("r", [1, 2, 3])
    assert engine.poll() == []  # polling never waits for a copy
    assert engine.abort("r")
    assert engine.num_free_host_blocks == 5  # still owned by the queued copy
    engine.set_paused(False)
    [done] = drain(engine, 1)
    assert (done.direction, done.status) == ("out", "aborted")
    assert engine.num_free_host_blocks == 8
    assert not engine.has_copy("r")
    assert engine.stats().aborted == 1


def test_aborted_swap_in_keeps_the_copy() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=8)
    before = snapshot(caches, [4])
    engine.swap_out("r", [4])
    engine.wait("r")
    engine.poll()
    engine.set_paused(True)
    engine.swap_in("r", [9])
    engine.abort("r")
    engine.set_paused(False)
    assert drain(engine, 1)[0].status == "aborted"
    assert engine.has_copy("r")
    engine.swap_in("r", [9])
    engine.wait("r")
    assert torch.equal(snapshot(caches, [9])[1], before[1])


def test_release_racing_large_copies_never_leaks() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC, num_blocks=512)
    engine = SwapEngine(caches, num_host_blocks=512)
    for round_ in range(20):
        engine.swap_out("r", list(range(0, 512, 2)))
        time.sleep(0.0002 * round_)
        engine.release("r")
        [done] = drain(engine, 1)
        assert done.status in ("aborted", "done")
        assert engine.num_free_host_blocks == 512
        assert not engine.has_copy("r")


def test_layers_land_in_order_and_wait_layer_takes_names() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=8)
    engine.set_paused(True)
    engine.swap_out("r", [1, 2])
    names = list(caches)
    assert not engine.layer_ready("r", names[0])
    engine.set_paused(False)
    engine.wait_layer("r", names[1])
    assert engine.layer_ready("r", 0)
    assert engine.layer_ready("r", names[1])
    with pytest.raises(KeyError, match="layer"):
        engine.layer_ready("r", "no.such.layer")
    engine.wait("r")


def test_bad_input_raises_clear_exceptions() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    engine = SwapEngine(caches, num_host_blocks=8)
    with pytest.raises(ValueError, match=r"device_blocks\[1\] = 48 is out of range \[0, 48\)"):
        engine.swap_out("r", [0, NUM_BLOCKS])
    with pytest.raises(ValueError, match="device_blocks contains block 3 twice"):
        engine.swap_out("r", [3, 3])
    with pytest.raises(ValueError, match="must not be empty"):
        engine.swap_out("r", [])
    with pytest.raises(UnknownRequestError, match="'ghost'"):
        engine.swap_in("ghost", [1])
    assert isinstance(UnknownRequestError("x"), KeyError)
    engine.set_paused(True)
    engine.swap_out("r", [1, 2])
    with pytest.raises(SwapError, match="already has a host copy or a transfer in flight"):
        engine.swap_out("r", [3])
    with pytest.raises(SwapError, match="transfer in flight"):
        engine.swap_in("r", [3, 4])
    engine.set_paused(False)
    engine.wait("r")
    with pytest.raises(ValueError, match="exceeds the 2 blocks stored"):
        engine.swap_in("r", [3, 4, 5])
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        engine.layer_ready("r", 5)
    assert engine.num_free_host_blocks == 6


def test_bad_construction_raises_clear_exceptions() -> None:
    caches = vllm_kv_caches(KVCacheLayout.LBHNC)
    with pytest.raises(ValueError, match="num_host_blocks"):
        SwapEngine(caches, num_host_blocks=0)
    with pytest.raises(ValueError, match="kv_caches"):
        SwapEngine({}, num_host_blocks=4)
    with pytest.raises(ValueError, match="backend"):
        SwapEngine(caches, num_host_blocks=4, backend="tpu")
    with pytest.raises(ValueError, match="the 'cuda' backend needs cuda tensors"):
        SwapEngine(caches, num_host_blocks=4, backend="cuda")
    with pytest.raises(ValueError, match="num_blocks"):
        SwapEngine(caches, num_host_blocks=4, num_blocks=7)
    broadcast = torch.zeros(1, 64).expand(NUM_BLOCKS, 64)
    with pytest.raises(ValueError, match=r"strides .* must be positive"):
        layer_spec(broadcast)
    two_level = torch.zeros(4, NUM_BLOCKS, 3, 8)[:, :, :, :4]
    with pytest.raises(ValueError, match="more than one level of fragments"):
        layer_spec(two_level, num_blocks=NUM_BLOCKS)


def test_shared_layers_are_copied_once_and_tensors_kept_alive() -> None:
    cache = torch.arange(NUM_BLOCKS * 64, dtype=torch.float32).reshape(NUM_BLOCKS, 64)
    expected = cache[[3, 4]].clone()
    engine = SwapEngine({"a": cache, "b": cache}, num_host_blocks=4)
    assert engine.num_layers == 1
    assert engine.layer_index("b") == 0
    del cache
    gc.collect()
    engine.swap_out("r", [3, 4])
    engine.wait("r")
    engine.poll()
    engine.swap_in("r", [0, 1])
    engine.wait("r")
    assert torch.equal(engine._tensors[0][[0, 1]], expected)


def test_dropping_an_engine_mid_copy_keeps_its_tensors_until_the_copiers_stop(
    tmp_path: Path,
) -> None:
    """Regression: the tensors were freed before the copier threads were joined (SIGSEGV).

    Runs in a subprocess (in an empty directory, so it imports the installed package) so that a
    crash fails this test instead of killing the test runner.
    Tensors of 64 MiB are mmapped by the allocator, so a freed one is unmapped at once.
    """
    script = textwrap.dedent(
        """
        import torch
        from lamps.swap import SwapEngine

        for _ in range(5):
            caches = [torch.ones(64, 1 << 18) for _ in range(2)]  # 64 blocks of 1 MiB a layer
            engine = SwapEngine(caches, num_host_blocks=64)
            del caches
            engine.swap_out("r", list(range(64)))
            del engine  # the copy is still in flight
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"


@pytest.mark.skipif(
    "cuda" not in swap.available_backends(),
    reason=f"CUDA swap backend not usable here: {swap.backend_status()['cuda']}",
)
def test_cuda_round_trip_is_bit_exact() -> None:
    caches = {name: t.cuda() for name, t in vllm_kv_caches(KVCacheLayout.LBHNC).items()}
    engine = SwapEngine(caches, num_host_blocks=16)
    assert engine.backend == "cuda"
    source, target = [5, 6, 7, 30, 2], [40, 41, 9, 10, 11]
    before = snapshot({k: v.cpu() for k, v in caches.items()}, source)
    round_trip(engine, "r", source, target)
    after = snapshot({k: v.cpu() for k, v in caches.items()}, target)
    for got, want in zip(after, before, strict=True):
        assert torch.equal(got, want)
