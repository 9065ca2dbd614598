"""Token ids of replayed requests: the segment traces' formula, and the seeded block hasher.

A replay's token ids only feed vLLM's prefix-cache hashes, so what matters is which requests
share which prefixes. For the segment traces (InferCept's format, the agent trace) arrival
``i``'s context is one deterministic sequence (``token_at``): its first two tokens make it
unique, every turn extends the previous one, and the sampled tokens are the sequence's next
ones. Traced conversations (kv-cache-tester's format) have their own mapping,
``lamps.replay.traced_tokens``. Both give the engine the same four answers: a turn's input
length, its whole input (a stateless request), the chunk a paused session resumes with (None
when the next input does not extend the session's context) and the token sampled at a position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vllm.v1.request import Request

    from lamps.replay.records import RequestRecord

VOCAB_SIZE = 50400
"""GPT-J's vocabulary; token ids only feed the prefix-cache hashes."""


def model_len_for(context_tokens: int, block_size: int, minimum: int = 2048) -> int:
    """A max_model_len that fits ``context_tokens`` plus the sampled token, block-aligned."""
    need = context_tokens + 1
    return max(minimum, -(-need // block_size) * block_size)


def tokens_for(index: int, start: int, stop: int) -> list[int]:
    """``[token_at(index, p) for p in range(start, stop)]``, vectorized."""
    out: list[int] = (
        (np.arange(start, stop, dtype=np.int64) * 7919 + index * 104729) % VOCAB_SIZE
    ).tolist()
    for p in (0, 1):
        if start <= p < stop:
            out[p - start] = token_at(index, p)
    return out


def token_at(index: int, position: int) -> int:
    """Token id at ``position`` of arrival ``index``'s context (unique first block per arrival)."""
    if position == 0:
        return index % VOCAB_SIZE
    if position == 1:
        return (index // VOCAB_SIZE) % VOCAB_SIZE
    return (position * 7919 + index * 104729) % VOCAB_SIZE


class SegmentTokens:
    """The segment traces' tokens: one growing sequence per arrival (``token_at``)."""

    def input_tokens(self, rec: RequestRecord, k: int) -> int:
        """Context length at the start of segment ``k``."""
        return rec.arrival.request.context_before(k)

    def prompt(self, rec: RequestRecord, k: int) -> list[int]:
        """The whole context at the start of segment ``k``."""
        return tokens_for(rec.arrival.index, 0, self.input_tokens(rec, k))

    def chunk(self, rec: RequestRecord, k: int) -> list[int] | None:
        """A paused session's next chunk: the last sampled token (never computed, vLLM drops it
        from the session) and the API's returned tokens."""
        ctx = self.input_tokens(rec, k)
        returned = rec.arrival.request.segments[k - 1].return_tokens
        return tokens_for(rec.arrival.index, ctx - returned - 1, ctx)

    def sampled(self, rec: RequestRecord, position: int) -> int:
        """The token the simulated model samples at ``position``."""
        return token_at(rec.arrival.index, position)

    def shared_hashes(
        self, rec: RequestRecord, k: int, previous: Request | None, hash_block_size: int
    ) -> list[Any]:
        """Block hashes segment ``k``'s request shares with ``previous`` (none: hash it all)."""
        return []

    def release(self, rec: RequestRecord) -> None:
        """The record's conversation has finished (nothing is kept per record here)."""


class SeededHasher:
    """vLLM's request block hasher, given the hashes a new request shares with an earlier one.

    vLLM hashes every full block of a prompt when the ``Request`` is built; a 100k-token turn
    that repeats the previous turn's 99k tokens would hash them again. ``seed`` hands over the
    previous request's hashes of the shared prefix (the caller has checked that the tokens are
    the same), and only the rest is hashed, by vLLM's own hasher."""

    def __init__(self, base: Callable[[Request], list[Any]]) -> None:
        self.base = base
        self._seeds: dict[str, list[Any]] = {}

    def seed(self, request_id: str, hashes: list[Any]) -> None:
        """The first ``len(hashes)`` block hashes of the next request called ``request_id``."""
        if hashes:
            self._seeds[request_id] = hashes

    def __call__(self, request: Request) -> list[Any]:
        seed = self._seeds.pop(request.request_id, None)
        if seed is None or request.block_hashes:
            return self.base(request)
        # vLLM's hasher continues from the request's last hash: let it see the seed.
        own = request.block_hashes
        request.block_hashes = list(seed)
        try:
            rest = self.base(request)
        finally:
            request.block_hashes = own
        return [*seed, *rest]
