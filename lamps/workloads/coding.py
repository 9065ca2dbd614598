"""Real coding-agent traces in kv-cache-tester's format (``callanjfox/kv-cache-tester``).

One JSON file is one conversation (its ``docs/trace_replay_tester.md`` documents the format):
``block_size`` tokens per hash id, ``tool_tokens`` + ``system_tokens`` (the prefix every input
starts with), ``hash_id_scope`` and ``requests``; each request has its input and output token
counts (``in``, ``out``), one ``hash_ids`` entry per full block of its input, ``stop``,
``input_types``, ``think_time`` and ``t``. A request of ``type: subagent`` is a nested
conversation with its own ``requests``; consecutive ones start together, once the parent's
previous request has answered (one before the parent's first request is rejected: none of the
traces has one, and the replay would have nothing to wait on).

Each conversation becomes a ``TracedConversation``: a ``WorkloadRequest`` whose segments are its
turns (so every policy's hints work unchanged: a segment's ``api_seconds`` is the gap after it)
and which also keeps each turn's input length and hash ids, for the replay's token mapping
(``lamps.replay.traced_tokens``). The gap before a turn is its ``think_time`` (``t`` minus the
previous ``t`` where absent, as kv-cache-tester falls back): after a ``stop: tool_use`` answer
it is a tool call, kept as traced unless ``max_tool_seconds`` caps it; otherwise it is a
person's time, capped at ``max_human_seconds`` (default 60 s: kv-cache-tester's own
``--max-delay`` default, which it applies to every gap; in these traces a person's gap has a
median of 156 s and runs to 20 hours, so uncapped a short window would mostly watch idle
users). A turn traced with 0 output tokens is replayed with 1 (a request decodes at least one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamps.workloads.model import TraceSegment, Workload, WorkloadRequest

DEFAULT_MAX_HUMAN_SECONDS = 60.0
"""Cap on a person's gap between an answer and the next input (kv-cache-tester --max-delay)."""

HASH_SCOPES = ("local", "global")
"""``local``: ids are unique within one trace; ``global``: ids are shared across traces."""

CODING_KIND = "coding"
"""The ``WorkloadRequest.kind`` (the tool name LAMPS' predictors see) of traced turns."""


@dataclass(frozen=True)
class TracedTurn:
    """One request of a conversation: its input, its output and the gap before it."""

    input_tokens: int
    output_tokens: int
    hash_ids: np.ndarray = field(compare=False, repr=False)  # one id per full block of input
    gap_seconds: float = 0.0
    gap_kind: str = "start"  # "start", "tool" (after stop: tool_use) or "human"


@dataclass(frozen=True)
class TracedConversation(WorkloadRequest):
    """A traced conversation: turns, sub-agents spawned before a turn, and where it came from.

    ``spawns`` holds ``(k, subagents)``: the sub-agents start together once turn ``k - 1`` has
    answered (``k == len(turns)``: after the last turn), and turn ``k`` waits for all of them."""

    turns: tuple[TracedTurn, ...] = ()
    spawns: tuple[tuple[int, tuple[TracedConversation, ...]], ...] = ()
    source: str = ""
    block_size: int = 64
    shared_prefix_tokens: int = 0  # tool_tokens + system_tokens
    hash_scope: str = "local"

    def context_before(self, segment_index: int) -> int:
        """The input of turn ``segment_index`` (turns need not extend one another)."""
        return self.turns[segment_index].input_tokens

    @property
    def final_context_tokens(self) -> int:
        """The longest context any turn reaches (input plus output)."""
        return max(t.input_tokens + t.output_tokens for t in self.turns)

    def subagents_before(self, k: int) -> tuple[TracedConversation, ...]:
        """The sub-agents that start before turn ``k`` (empty if none)."""
        for at, subs in self.spawns:
            if at == k:
                return subs
        return ()

    def all_conversations(self) -> list[TracedConversation]:
        """This conversation and every sub-agent under it, depth first."""
        out: list[TracedConversation] = [self]
        for _, subs in self.spawns:
            for s in subs:
                out += s.all_conversations()
        return out


class TraceFormatError(ValueError):
    """A trace file that does not follow the format (the message names file, field, index)."""


def is_kvcache_trace(data: Any) -> bool:
    """Whether decoded JSON looks like one kv-cache-tester conversation."""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("requests"), list)
        and ("block_size" in data or "hash_id_scope" in data or "tool_tokens" in data)
    )


class _Parser:
    """Parses one trace file's decoded JSON into a TracedConversation."""

    def __init__(self, path: str, max_human_seconds: float, max_tool_seconds: float | None):
        self.path = path
        self.max_human = max_human_seconds
        self.max_tool = math.inf if max_tool_seconds is None else max_tool_seconds
        self.block_size = 64
        self.scope = "local"

    def fail(self, where: str, message: str) -> TraceFormatError:
        return TraceFormatError(f"{self.path}: {where}: {message}")

    def number(self, obj: Mapping[str, Any], name: str, where: str, *, integer: bool) -> float:
        if name not in obj:
            raise self.fail(where, f"missing field {name!r}")
        value = obj[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and integer:
            ok = float(value).is_integer()
        if not ok or not math.isfinite(value) or value < 0:
            kind = "a non-negative integer" if integer else "a finite number >= 0"
            raise self.fail(where, f"field {name!r} must be {kind}, got {value!r}")
        number: float = value  # checked above: an int or a float
        return number

    def top(self, data: Any) -> TracedConversation:
        if not isinstance(data, Mapping):
            raise self.fail("top level", "must be an object with a 'requests' list")
        block = self.number(data, "block_size", "top level", integer=True)
        if block < 1:
            raise self.fail("top level", f"field 'block_size' must be >= 1, got {block!r}")
        self.block_size = int(block)
        scope = data.get("hash_id_scope", "local")
        if scope not in HASH_SCOPES:
            raise self.fail("top level", f"field 'hash_id_scope' must be one of {HASH_SCOPES}")
        self.scope = scope
        name = str(data.get("id") or Path(self.path).stem)
        return self.conversation(data, name, "")

    def conversation(self, obj: Mapping[str, Any], name: str, prefix: str) -> TracedConversation:
        where = prefix.rstrip(".") or "top level"
        raw = obj.get("requests")
        if not isinstance(raw, list) or not raw:
            raise self.fail(where, "field 'requests' must be a non-empty list")
        turns: list[TracedTurn] = []
        spawns: list[tuple[int, list[TracedConversation]]] = []
        prev: tuple[Mapping[str, Any], str] | None = None
        for i, req in enumerate(raw):
            at = f"{prefix}requests[{i}]"
            if not isinstance(req, Mapping):
                raise self.fail(at, "must be an object")
            if req.get("type") == "subagent":
                sub_name = f"{name}/{req.get('agent_id') or f'subagent{i}'}"
                sub = self.conversation(req, sub_name, f"{at}.")
                if spawns and spawns[-1][0] == len(turns):
                    spawns[-1][1].append(sub)
                else:
                    spawns.append((len(turns), [sub]))
                continue
            turns.append(self.turn(req, at, prev))
            prev = (req, at)
        if not turns:
            raise self.fail(where, "has sub-agents but no request of its own")
        if spawns and spawns[0][0] == 0:
            raise self.fail(f"{prefix}requests[0]", "a sub-agent before the first request")
        shared = sum(
            int(self.number(obj, k, where, integer=True)) if k in obj else 0
            for k in ("tool_tokens", "system_tokens")
        )
        segments = [
            TraceSegment(
                t.output_tokens,
                turns[k + 1].gap_seconds,
                max(0, turns[k + 1].input_tokens - t.input_tokens - t.output_tokens),
                has_api=True,
            )
            for k, t in enumerate(turns[:-1])
        ]
        segments.append(TraceSegment(turns[-1].output_tokens))
        return TracedConversation(
            request_id=name,
            prompt_tokens=turns[0].input_tokens,
            segments=tuple(segments),
            kind=CODING_KIND,
            turns=tuple(turns),
            spawns=tuple((k, tuple(s)) for k, s in spawns),
            source=self.path,
            block_size=self.block_size,
            shared_prefix_tokens=shared,
            hash_scope=self.scope,
        )

    def turn(
        self, req: Mapping[str, Any], at: str, prev: tuple[Mapping[str, Any], str] | None
    ) -> TracedTurn:
        tokens_in = int(self.number(req, "in", at, integer=True))
        if tokens_in < 1:
            raise self.fail(at, "field 'in' must be >= 1, got 0")
        tokens_out = max(1, int(self.number(req, "out", at, integer=True)))
        ids = self.hash_ids(req, at, tokens_in)
        if prev is None:
            return TracedTurn(tokens_in, tokens_out, ids)
        before, before_at = prev
        if req.get("think_time") is not None:
            gap = float(self.number(req, "think_time", at, integer=False))
        else:  # kv-cache-tester's fallback: the time between the two requests
            now = self.number(req, "t", at, integer=False)
            gap = max(0.0, float(now - self.number(before, "t", before_at, integer=False)))
        tool = before.get("stop") == "tool_use"
        cap = self.max_tool if tool else self.max_human
        return TracedTurn(tokens_in, tokens_out, ids, min(gap, cap), "tool" if tool else "human")

    def hash_ids(self, req: Mapping[str, Any], at: str, tokens_in: int) -> np.ndarray:
        raw = req.get("hash_ids")
        if not isinstance(raw, list):
            raise self.fail(at, "field 'hash_ids' must be a list of integers")
        full = tokens_in // self.block_size
        if len(raw) not in (full, -(-tokens_in // self.block_size)):
            raise self.fail(
                at,
                f"field 'hash_ids' has {len(raw)} ids; 'in' = {tokens_in} tokens of "
                f"block_size {self.block_size} needs {full} (full blocks) or one more",
            )
        ids = np.asarray(raw)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise self.fail(at, "field 'hash_ids' must be a list of integers")
        ids = ids[:full].astype(np.int64)
        ids.setflags(write=False)
        return ids


def parse_coding_trace(
    data: Any,
    path: str = "trace",
    *,
    max_human_seconds: float = DEFAULT_MAX_HUMAN_SECONDS,
    max_tool_seconds: float | None = None,
) -> TracedConversation:
    """One conversation from a kv-cache-tester trace's decoded JSON (``path`` names it in
    errors)."""
    if not (max_human_seconds >= 0):
        raise ValueError(f"max_human_seconds must be >= 0, got {max_human_seconds}")
    if max_tool_seconds is not None and not (max_tool_seconds >= 0):
        raise ValueError(f"max_tool_seconds must be >= 0, got {max_tool_seconds}")
    return _Parser(path, max_human_seconds, max_tool_seconds).top(data)


def trace_files(path: Path) -> list[Path]:
    """The trace files of ``path``: its ``*.json`` files (sorted) if a directory, else itself."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: no .json trace files in this directory")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"trace file not found: {path}")
    return [path]


def read_json(path: Path) -> Any:
    """A file's JSON, or a ValueError naming the file (a truncated file, say so)."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TraceFormatError(f"{path}: not valid JSON, truncated? ({e})") from e


def load_coding_traces(
    path: str | Path,
    *,
    max_human_seconds: float = DEFAULT_MAX_HUMAN_SECONDS,
    max_tool_seconds: float | None = None,
) -> Workload:
    """Every conversation of a kv-cache-tester trace directory (or one trace file)."""
    p = Path(path)
    convs = [
        parse_coding_trace(
            read_json(f),
            str(f),
            max_human_seconds=max_human_seconds,
            max_tool_seconds=max_tool_seconds,
        )
        for f in trace_files(p)
    ]
    return Workload(p.stem if p.is_file() else p.name, tuple(convs))
