"""The long-context engine profiles: Llama-3.1-8B at 128k on an H100, Llama-3.1-70B on 8 H100s."""

from __future__ import annotations

import dataclasses

import pytest

from lamps.replay.engine_model import StepClock
from lamps.replay.profiles import GIB, H100_DGX_ALLREDUCE_MS, get_profile


def _prefill_seconds(profile_name: str, tokens: int, chunk: int = 8192) -> float:
    """A whole prompt prefilled alone, chunk by chunk (vLLM's chunked prefill)."""
    model = get_profile(profile_name).engine_model()
    total, done = 0.0, 0
    while done < tokens:
        step = StepClock(model)
        k = min(chunk, tokens - done)
        step.add(done, k)
        total += step.compute_seconds()
        done += k
    return total


def test_llama31_8b_at_128k_holds_long_contexts() -> None:
    p = get_profile("llama31-8b-h100-128k")
    assert p.max_model_len == 131072
    assert p.kv_bytes_per_token == 131072  # 32 layers x 8 KV heads x 128 x K,V x fp16
    expected = (int(0.9 * 80 * GIB) - 16_060_000_000) // 131072
    assert abs(p.kv_capacity_tokens() - expected) < p.block_size
    assert 3 * 128_000 < p.kv_capacity_tokens() < 4 * 128_000


def test_llama31_70b_tensor_parallel_is_eight_gpus_plus_all_reduces() -> None:
    p = get_profile("llama31-70b-8xh100")
    assert p.kv_bytes_per_token == 327_680  # 40,960 on each of the 8 GPUs
    assert 1.4e6 < p.kv_capacity_tokens() < 1.5e6
    m = p.engine_model()
    assert m.comm_ms == pytest.approx(2 * 80 * H100_DGX_ALLREDUCE_MS)
    assert m.comm_ms_per_token == pytest.approx(2 * 80 * 2 * 8192 * 4.78e-9)
    assert get_profile("llama31-8b-h100-128k").engine_model().comm_ms == 0
    # Its scheduler cost model takes the engine's: a = per-token slope, c = fixed cost.
    cost = p.cost()
    assert cost.c_ms == pytest.approx(m.overhead_ms + m.weights_ms + m.comm_ms, rel=0.01)
    assert cost.a_ms_per_token == pytest.approx(m.a_ms_per_token + m.comm_ms_per_token, rel=0.01)


def test_long_prefill_pays_its_quadratic_attention() -> None:
    short, long = (_prefill_seconds("llama31-8b-h100-128k", n) for n in (50_000, 100_000))
    model = get_profile("llama31-8b-h100-128k").engine_model()
    attention = model.prefill_ms_per_pair * 100_000 * 100_001 / 2 / 1e3
    linear = 100_000 * model.a_ms_per_token / 1e3
    assert long == pytest.approx(attention + linear, rel=0.05)  # chunking adds no pairs
    assert 10 < long < 20 and 3.3 < long / short < 4  # seconds; nearly n^2
    # Grouped-query attention: the query width prices it, not the number of KV heads.
    p = get_profile("llama31-8b-h100-128k")
    cost = {"a_ms_per_token": 0.0207, "c_ms": 8.66, "kv_bytes_per_token": 524288.0}
    wider_kv = dataclasses.replace(
        p, num_kv_heads=32, cost_model={**cost, "link_bytes_per_second": 50e9}
    )
    assert wider_kv.engine_model().prefill_ms_per_pair == model.prefill_ms_per_pair
