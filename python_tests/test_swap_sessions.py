"""Parked turns of HTTP sessions through the swap connector (lamps.connector.session_copies).

A finished request's turn is copied to the host under a copy id of its own; the session's next
request, a new request id, is matched to the copy by its block hashes and loads it. Driven by
vLLM's scheduler with the worker-role connector on real CPU tensors (`SwapHarness` of
test_swap_connector.py): every token the next request finds computed is checked to hold the
KV value written for it, so a load that restored the wrong data fails.
"""

from __future__ import annotations

from typing import Any

from test_swap_connector import SwapHarness, harness  # noqa: F401 (the fixture)

from lamps._core import Strategy
from lamps.harness import make_request

HINTS = {"lamps_tool": "search", "lamps_predicted_api_seconds": 30.0}


def finish(h: SwapHarness, rid: str) -> None:
    h.step_until(lambda: rid not in h.scheduler.requests)


def sweep(h: SwapHarness, n: int, length: int = 120) -> None:
    """Fresh one-turn requests that evict every cached block."""
    for i in range(n):
        rid = f"sweep{i}"
        start = 100 + i * length
        h.scheduler.add_request(make_request(rid, [t % 490 + 3 for t in range(start, start
                                                                              + length)],
                                             max_tokens=1))  # fmt: skip
        finish(h, rid)


def test_turn_is_swapped_out_and_loaded_into_the_next_request(harness: Any) -> None:  # noqa: F811
    h: SwapHarness = harness(prefix_caching=True, num_blocks=40)
    prompt = [(7 * i) % 490 + 3 for i in range(90)]
    h.scheduler.add_request(make_request("t1", prompt, max_tokens=4, session_id="s",
                                         extra_args=HINTS))  # fmt: skip
    finish(h, "t1")
    parked = h.scheduler.lamps_sessions.session("s").parked
    assert parked.strategy == Strategy.SWAP
    assert parked.tokens == 80  # 5 full blocks of the 93 computed tokens
    copies = h.connector.turn_copies
    h.step_until(lambda: not copies.has_pending_push_work())
    assert copies.num_copies == 1
    sweep(h, 6)  # 720 fresh tokens through a 624-token cache: the turn is gone from the GPU
    assert not any(b.block_hash is not None and b.block_hash == parked.block_keys[0]
                   for b in h.scheduler.kv_cache_manager.block_pool.blocks)  # fmt: skip
    h.scheduler.add_request(make_request("t2", [*prompt, 9, 9, 9, 9, 11, 12], max_tokens=2,
                                         session_id="s", extra_args=HINTS))  # fmt: skip
    h.step_until(lambda: "t2" in h.loaded_tokens)
    assert h.loaded_tokens["t2"] == 5  # the whole copy, from block 0
    finish(h, "t2")  # the harness checked every loaded token's KV on the way
    stats = h.scheduler.lamps_stats
    assert (stats.session_swapped, stats.takeovers) == (2, 1)  # t2 parked its own turn
    assert stats.recovered_tokens == stats.parked_tokens == 80
    assert h.connector.swap_stats()["turn_loads"] == 1
    assert copies.num_copies <= 1  # t2's own turn may be parked in turn
    h.scheduler.lamps_sessions.end("s")
    h.step_until(lambda: copies.num_copies == 0 and h.host_pool_drained())


def test_ending_the_session_drops_its_copy(harness: Any) -> None:  # noqa: F811
    h: SwapHarness = harness(prefix_caching=True, num_blocks=40)
    prompt = [(5 * i) % 490 + 3 for i in range(70)]
    h.scheduler.add_request(make_request("t1", prompt, max_tokens=4, session_id="s",
                                         extra_args=HINTS))  # fmt: skip
    finish(h, "t1")
    copies = h.connector.turn_copies
    assert copies.num_copies == 1
    h.scheduler.lamps_sessions.end("s")  # dropped while queued or saving
    h.step_until(lambda: copies.num_copies == 0 and h.host_pool_drained())
    assert h.connector.num_free_host_blocks == h.connector.num_host_blocks
    free = h.scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    assert free == h.scheduler.kv_cache_manager.block_pool.num_gpu_blocks - 1
