"""Pause-strategy inputs: how much of a discarded context the prefix cache will still hold."""

from __future__ import annotations

import math


def estimate_cached_tokens(
    context_tokens: int,
    block_size: int,
    free_blocks: int,
    api_seconds: float,
    alloc_blocks_per_second: float,
    prefix_caching: bool,
) -> int:
    """Tokens of a context freed now that the prefix cache should still hold after `api_seconds`.

    vLLM's free-block queue is LRU: allocation takes blocks from its head, and freeing a request
    appends its blocks at the tail in reverse order, so its *last* blocks are evicted first and
    its prefix last. Only the blocks already free (`free_blocks`, all ahead of ours) shield it.
    During the call the engine allocates about `alloc_blocks_per_second * api_seconds` blocks
    (gross: blocks freed later queue behind ours and do not shield it), so of the request's full
    blocks, `free_blocks + own - allocated` survive, clamped to [0, own]. Partial tail blocks
    are never cached. Blocks freed by requests finishing during the call are not counted
    (they queue behind ours), which keeps the estimate on the safe side.
    """
    if not prefix_caching or context_tokens <= 0 or block_size <= 0:
        return 0
    own = context_tokens // block_size
    if not math.isfinite(api_seconds) or not math.isfinite(alloc_blocks_per_second):
        return 0
    allocated = max(alloc_blocks_per_second, 0.0) * max(api_seconds, 0.0)
    surviving = min(max(free_blocks + own - allocated, 0.0), float(own))
    return int(surviving) * block_size
