"""The conversations ``lamps agents`` replays: loaded as the replay loads them, and scaled
down for small servers.

Loading is ``lamps.workloads.load_trace`` (the replay's loader: a bad trace gets its error,
naming file, field and index; the same caps on a person's and a tool's gap).

Scaling (``--scale F``): a CPU server with a tiny model cannot take 100k-token prompts, so every
token count is multiplied by one factor while every hash id keeps its place. A trace block of
``block_size`` tokens (64) becomes ``b = max(1, round(block_size * F))`` tokens, and the
effective factor is ``f = b / block_size`` (``F`` itself when ``block_size * F`` is whole; the
results give both). A turn of ``in`` tokens, ``n = in // block_size`` hashed blocks and a
partial block of ``p`` tokens becomes ``n * b + floor(p * f)`` tokens (at least 1) with the same
``n`` hash ids, so two scaled inputs share a prefix of exactly as many blocks as the traced ones
(``m`` trace blocks are ``m * b`` tokens, of which the server's prefix cache finds its whole
blocks); outputs become ``max(1, round(out * f))`` tokens and the tool and system prefix
``round(... * f)`` (the warm prefix is a fraction of it). Gaps are not scaled.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from lamps.workloads import Workload, load_trace
from lamps.workloads.coding import TracedConversation, TracedTurn


def scaled_block(block_size: int, factor: float) -> int:
    """Tokens of one trace block at ``factor`` (at least 1)."""
    return max(1, round(block_size * factor))


def _scale_turn(turn: TracedTurn, block_size: int, block: int) -> TracedTurn:
    f = block / block_size
    n = len(turn.hash_ids)
    partial = turn.input_tokens - n * block_size
    return replace(
        turn,
        input_tokens=max(1, n * block + math.floor(partial * f)),
        output_tokens=max(1, round(turn.output_tokens * f)),
    )


def scale_conversation(conv: TracedConversation, factor: float) -> TracedConversation:
    """``conv`` (and its sub-agents) with every token count scaled (module docstring)."""
    if not 0 < factor <= 1:
        raise ValueError(f"scale: must be in (0, 1], got {factor}")
    if factor == 1:
        return conv
    block = scaled_block(conv.block_size, factor)
    turns = tuple(_scale_turn(t, conv.block_size, block) for t in conv.turns)
    segments = tuple(
        replace(
            seg,
            output_tokens=turns[k].output_tokens,
            return_tokens=max(
                0, turns[k + 1].input_tokens - turns[k].input_tokens - turns[k].output_tokens
            )
            if k + 1 < len(turns)
            else seg.return_tokens,
        )
        for k, seg in enumerate(conv.segments)
    )
    spawns = tuple(
        (k, tuple(scale_conversation(s, factor) for s in subs)) for k, subs in conv.spawns
    )
    return replace(
        conv,
        prompt_tokens=turns[0].input_tokens,
        segments=segments,
        turns=turns,
        spawns=spawns,
        block_size=block,
        shared_prefix_tokens=round(conv.shared_prefix_tokens * block / conv.block_size),
    )


def load_conversations(
    trace: str | Path,
    *,
    scale: float = 1.0,
    max_human_seconds: float,
    max_tool_seconds: float | None,
) -> tuple[Workload, float]:
    """The traced conversations of ``trace`` (a file, directory or ``builtin:NAME``), scaled,
    and the effective factor (the smallest, if the traces' block sizes differ)."""
    workload = load_trace(
        trace, max_human_seconds=max_human_seconds, max_tool_seconds=max_tool_seconds
    )
    others = [r.request_id for r in workload.requests if not isinstance(r, TracedConversation)]
    if others:
        raise ValueError(
            f"{trace}: lamps agents replays coding-agent traces (kv-cache-tester format); "
            f"this trace has other requests ({others[0]!r}, ...)"
        )
    traced = [r for r in workload.requests if isinstance(r, TracedConversation)]
    convs = tuple(scale_conversation(r, scale) for r in traced)
    factor = min(c.block_size / r.block_size for c, r in zip(convs, traced, strict=True))
    return Workload(workload.name, convs), factor


def longest_context(workload: Workload) -> tuple[int, str]:
    """The most tokens one turn needs (input and output) and where: ``(tokens, "conv turn k")``."""
    best, where = 0, ""
    for top in workload.requests:
        assert isinstance(top, TracedConversation)
        for conv in top.all_conversations():
            for k, t in enumerate(conv.turns):
                if t.input_tokens + t.output_tokens > best:
                    best, where = t.input_tokens + t.output_tokens, f"{conv.request_id} turn {k}"
    return best, where
