"""Token ids of traced conversations: each hash id becomes one block of deterministic tokens.

A turn's input is its hash ids' blocks (``block_size`` tokens each, 64 in kv-cache-tester's
traces) followed by a partial last block the trace does not hash. A block's tokens depend only
on (scope, id, offset), so two inputs of one trace share a prefix exactly as long as their id
lists agree; the engine's 16-token blocks divide 64, so vLLM's real prefix cache sees exactly
that sharing. The scope is one replayed trace instance (``hash_id_scope: local``; a parent and
its sub-agents share it, as their ids are unique within the file; ``global``: one scope for
all), so two users replaying the same file share nothing but the warm prefix.

What follows a turn's full blocks (its partial block, then its answer) is the *next* input's
tokens at those positions when the next input keeps all of this turn's blocks (it extends it),
up to the next input's length; anything beyond, or after a turn whose next input does not
extend it (context compaction), is unique to the turn. So the tokens the simulated model
samples are the ones the conversation's next input has there, and the next turn's prefix
lookup hits through the previous answer as on a real server.

The warm prefix (kv-cache-tester ``--warm-prefix-pct``, default 0.5): the first ``W`` tokens
of every conversation's first input (sub-agents included) are one canonical sequence shared
by all conversations, ``W = fraction x`` the largest ``tool_tokens + system_tokens`` of the
workload; the blocks holding them keep those tokens wherever their ids appear later.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lamps.replay.tokens import VOCAB_SIZE
from lamps.workloads.coding import TracedConversation

if TYPE_CHECKING:
    from vllm.v1.request import Request

    from lamps.replay.records import RequestRecord
    from lamps.workloads import Arrival

DEFAULT_WARM_PREFIX = 0.5
"""kv-cache-tester's ``--warm-prefix-pct`` default: half of the largest tool+system prefix."""

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CANONICAL = 0x5EED


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 values (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _C1
    x = (x ^ (x >> np.uint64(27))) * _C2
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _key(*parts: int) -> np.uint64:
    """A 64-bit key from integers (tuple hashes of ints do not depend on PYTHONHASHSEED)."""
    key: np.uint64 = np.uint64(hash(parts) & 0xFFFFFFFFFFFFFFFF)
    return key


def _stream(key: np.uint64, start: int, stop: int, vocab: int) -> np.ndarray:
    """Tokens ``start..stop`` of the pseudo-random sequence named ``key``."""
    pos = np.arange(start, stop, dtype=np.uint64)
    tokens: np.ndarray = (_mix(pos * _GOLDEN + key) % np.uint64(vocab)).astype(np.int64)
    return tokens


@dataclass
class _Conversation:
    """One replayed conversation: its turns' ids, and which turn the next one extends."""

    conv: TracedConversation
    scope: int
    number: int  # distinguishes a trace's sub-agents in the tokens unique to a turn
    canonical: dict[int, int]  # the scope's warm-prefix ids -> their block index
    canonical_ids: np.ndarray  # the same ids, for np.isin
    extends: np.ndarray = field(init=False)  # extends[k]: turn k+1 keeps all of turn k's blocks
    prompt_cache: dict[int, np.ndarray] = field(default_factory=dict)
    output_cache: tuple[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        turns = self.conv.turns
        flags = []
        for a, b in itertools.pairwise(turns):
            n = len(a.hash_ids)
            flags.append(len(b.hash_ids) >= n and bool(np.array_equal(b.hash_ids[:n], a.hash_ids)))
        self.extends = np.array(flags, dtype=bool)


class TracedTokens:
    """Token ids of traced conversations, per replayed record (see the module docstring)."""

    def __init__(
        self,
        conversations: Iterable[TracedConversation],
        warm_prefix: float = DEFAULT_WARM_PREFIX,
        vocab: int = VOCAB_SIZE,
    ) -> None:
        if not 0.0 <= warm_prefix <= 1.0:
            raise ValueError(f"warm_prefix must be in [0, 1], got {warm_prefix}")
        shared = [c.shared_prefix_tokens for top in conversations for c in top.all_conversations()]
        self.warm_tokens = int(warm_prefix * max(shared, default=0))
        self.vocab = vocab
        self._canonical = _stream(_key(_CANONICAL), 0, self.warm_tokens, vocab)
        self._scopes: dict[int, tuple[dict[int, int], np.ndarray]] = {}
        self._records: dict[int, _Conversation] = {}

    def register(self, arrival: Arrival, scope: int, number: int = 0) -> None:
        """``arrival`` (a traced conversation) replays in ``scope`` (one trace instance)."""
        conv = arrival.request
        if not isinstance(conv, TracedConversation):
            raise TypeError(f"{arrival.request_id}: not a traced conversation")
        scope = 0 if conv.hash_scope == "global" else scope
        canonical = dict(self._scopes.get(scope, ({}, None))[0])
        first = conv.turns[0].hash_ids
        for b in range(min(len(first), -(-self.warm_tokens // conv.block_size))):
            canonical.setdefault(int(first[b]), b)
        ids = np.fromiter(canonical, dtype=np.int64, count=len(canonical))
        self._scopes[scope] = (canonical, ids)
        self._records[arrival.index] = _Conversation(conv, scope, number, canonical, ids)

    def release(self, rec: RequestRecord) -> None:
        """Forgets a finished conversation's caches."""
        self._records.pop(rec.arrival.index, None)

    # -- the tokens --------------------------------------------------------------------------

    def _blocks(self, c: _Conversation, k: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``start..stop`` of turn ``k``'s full blocks."""
        bs = c.conv.block_size
        b0, b1 = start // bs, -(-stop // bs)
        ids = c.conv.turns[k].hash_ids[b0:b1]
        keys = _mix(ids.astype(np.uint64) ^ np.uint64(_key(c.scope)))
        grid = keys[:, None] + np.arange(bs, dtype=np.uint64)[None, :] * _GOLDEN
        tokens = (_mix(grid) % np.uint64(self.vocab)).astype(np.int64)
        if c.canonical:
            self._warm(c, ids, tokens)
        span: np.ndarray = tokens.reshape(-1)[start - b0 * bs : stop - b0 * bs]
        return span

    def _warm(self, c: _Conversation, ids: np.ndarray, tokens: np.ndarray) -> None:
        """Puts the canonical warm-prefix tokens into the blocks whose ids carry them."""
        bs = c.conv.block_size
        for row in np.flatnonzero(np.isin(ids, c.canonical_ids)).tolist():
            b = c.canonical[int(ids[row])]
            end = min(bs, self.warm_tokens - b * bs)
            tokens[row, :end] = self._canonical[b * bs : b * bs + end]

    def _span(self, c: _Conversation, k: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``start..stop`` of turn ``k``'s input and what follows it."""
        turns = c.conv.turns
        full = len(turns[k].hash_ids) * c.conv.block_size
        parts = []
        if start < full:
            parts.append(self._blocks(c, k, start, min(stop, full)))
        if stop > full:
            s = max(start, full)
            if k + 1 < len(turns) and c.extends[k]:
                m = min(stop, turns[k + 1].input_tokens)
                if s < m:
                    parts.append(self._span(c, k + 1, s, m))
                s = max(s, m)
            if s < stop:
                parts.append(_stream(_key(c.scope, c.number, k), s, stop, self.vocab))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _prompt_array(self, c: _Conversation, k: int) -> np.ndarray:
        cached = c.prompt_cache.get(k)
        if cached is None:
            cached = self._span(c, k, 0, c.conv.turns[k].input_tokens)
            for old in [t for t in c.prompt_cache if t < k - 1]:
                del c.prompt_cache[old]  # keep this turn and the previous one
            c.prompt_cache[k] = cached
        return cached

    def _output_array(self, c: _Conversation, k: int) -> np.ndarray:
        if c.output_cache is None or c.output_cache[0] != k:
            turn = c.conv.turns[k]
            start = turn.input_tokens
            c.output_cache = (k, self._span(c, k, start, start + turn.output_tokens))
        return c.output_cache[1]

    # -- what the engine asks ----------------------------------------------------------------

    def input_tokens(self, rec: RequestRecord, k: int) -> int:
        """Turn ``k``'s input length."""
        return self._records[rec.arrival.index].conv.turns[k].input_tokens

    def prompt(self, rec: RequestRecord, k: int) -> list[int]:
        """Turn ``k``'s whole input."""
        prompt: list[int] = self._prompt_array(self._records[rec.arrival.index], k).tolist()
        return prompt

    def chunk(self, rec: RequestRecord, k: int) -> list[int] | None:
        """A paused session's next chunk (turn ``k - 1``'s last sampled token, then the new
        input), or None when turn ``k``'s input does not extend the session's context (turn
        ``k - 1``'s input and whole answer)."""
        c = self._records[rec.arrival.index]
        before, turn = c.conv.turns[k - 1], c.conv.turns[k]
        end = before.input_tokens + before.output_tokens
        if not c.extends[k - 1] or turn.input_tokens < end:
            return None
        rest: list[int] = self._prompt_array(c, k)[end - 1 :].tolist()
        return rest

    def sampled(self, rec: RequestRecord, position: int) -> int:
        """The token sampled at ``position`` of the record's current turn."""
        c = self._records[rec.arrival.index]
        k = rec.segment
        out = self._output_array(c, k)
        return int(out[position - c.conv.turns[k].input_tokens])

    def shared_hashes(
        self, rec: RequestRecord, k: int, previous: Request | None, hash_block_size: int
    ) -> list[Any]:
        """The block hashes turn ``k``'s input shares with ``previous``, the record's request of
        turn ``k - 1`` (its input and the answer it produced)."""
        if previous is None or k == 0 or not previous.block_hashes:
            return []
        c = self._records[rec.arrival.index]
        answer = self._output_array(c, k - 1)[: previous.num_output_tokens]
        before = np.concatenate([self._prompt_array(c, k - 1), answer])
        now = self._prompt_array(c, k)
        n = min(len(before), len(now))
        differ = np.flatnonzero(before[:n] != now[:n])
        same = int(differ[0]) if differ.size else n
        blocks = min(same // hash_block_size, len(previous.block_hashes))
        return list(previous.block_hashes[:blocks])
