"""Tiny kv-cache-tester traces for the tests: built from (input, output, hash ids) per turn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BLOCK = 64


def ids(*runs: tuple[int, int]) -> list[int]:
    """Hash ids from (first, count) runs."""
    return [first + i for first, count in runs for i in range(count)]


def request(
    tokens_in: int,
    tokens_out: int,
    hash_ids: Sequence[int] | None = None,
    *,
    stop: str = "tool_use",
    think: float = 1.0,
    t: float = 0.0,
) -> dict[str, Any]:
    """One request; ``hash_ids`` default: 1, 2, ... one per full block of the input."""
    return {
        "t": t,
        "type": "n",
        "in": tokens_in,
        "out": tokens_out,
        "hash_ids": list(hash_ids) if hash_ids is not None else ids((1, tokens_in // BLOCK)),
        "input_types": ["tool_result"],
        "output_types": ["tool_use"],
        "stop": stop,
        "think_time": think,
    }


def subagent(requests: list[dict[str, Any]], agent_id: str = "agent_001") -> dict[str, Any]:
    """A sub-agent entry with its own requests."""
    return {"t": 0.0, "type": "subagent", "agent_id": agent_id, "requests": requests}


def trace(
    requests: list[dict[str, Any]], name: str = "tiny", *, tool: int = 100, system: int = 28
) -> dict[str, Any]:
    """A whole trace (block size 64, local hash-id scope)."""
    return {
        "id": name,
        "models": ["test"],
        "block_size": BLOCK,
        "hash_id_scope": "local",
        "tool_tokens": tool,
        "system_tokens": system,
        "requests": requests,
    }


def write(directory: Path, traces: dict[str, dict[str, Any]]) -> Path:
    """Writes ``{file name: trace}`` into ``directory`` and returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in traces.items():
        (directory / name).write_text(json.dumps(data))
    return directory


def extending(turns: int, first: int = 200, grow: int = 150, out: int = 20) -> list[dict[str, Any]]:
    """A conversation whose every input extends the previous one (input, answer, new tokens)."""
    reqs = []
    tokens_in = first
    for k in range(turns):
        reqs.append(request(tokens_in, out, stop="tool_use" if k < turns - 1 else "end_turn"))
        tokens_in += out + grow
    return reqs
