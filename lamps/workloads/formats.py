"""Trace formats: InferCept's JSON (numeric and text segments), the compact builtin format.

InferCept's format is a JSON object ``{request_id: [segment, ...]}`` where each segment is
either numeric (``prompt_tokens``, ``completion_tokens``, ``api_time``, ``api_token_length``;
``prompt_tokens`` is the full context at the segment's start) or text (``prompt``,
``completion``, ``api_token``, ``api_time``; token counts are estimated from the text because no
tokenizer is assumed to be available). An API call on the last segment is dropped: nothing is
generated after it, so it cannot affect the engine. The compact format is what lamps ships in
``lamps/data``: gzipped ``{"version": 1, "requests": {id: [kind, prompt, [[out, api, ret,
has_api], ...]]}}``, token counts and types only.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from lamps.workloads.coding import (
    DEFAULT_MAX_HUMAN_SECONDS,
    is_kvcache_trace,
    load_coding_traces,
    parse_coding_trace,
    read_json,
)
from lamps.workloads.model import TraceSegment, Workload, WorkloadRequest

CHARS_PER_TOKEN = 4.0
"""Average characters per GPT-2/GPT-J BPE token on English text (text traces only)."""

BUILTIN_TRACES = {
    "infercept-multi-api": "infercept_multi_api.segments.json.gz",
    "mars-single-api": "mars_single_api.segments.json.gz",
}
"""Traces shipped in lamps/data (compact format), usable as ``--trace builtin:NAME``."""

GENERATED_TRACES = ("infercept-single-api", "agent")
"""Traces built on load, usable as ``--trace builtin:NAME``: the single-API variant of the
shipped multi-API trace (``lamps.workloads.variants``) and the agent trace
(``lamps.workloads.agent``, 400 programs, seed 0)."""

CODING_TRACES = ("claude-code",)
"""Shipped kv-cache-tester traces (``lamps.workloads.coding_pack``), ``--trace builtin:NAME``."""

# The `api_token` text InferCept's dataset puts on the tool calls of its chat requests: in
# shared/workloads/infercept_multi_api.json every chat+TTS request's tool call starts with the
# first prefix and every chat+image one with the second (225 calls each); plain chat requests'
# calls are human replies (free text). Numeric segments carry no text, so their type comes from
# the shape (see `classify`).
_TTS_CALL_PREFIX = "Convert this to text to speech"
_IMAGE_CALL_PREFIX = "Generate an image"


def estimate_tokens(text: str) -> int:
    """Token count of ``text`` under the ~4 characters per BPE token rule (at least 1)."""
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def _field(seg: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in seg:
        raise ValueError(f"{where}: missing field {name!r}")
    return seg[name]


def _int_field(seg: Mapping[str, Any], name: str, where: str, minimum: int) -> int:
    value = _field(seg, name, where)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{where}: field {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: field {name!r} must be >= {minimum}, got {value!r}")
    return int(value)


def _seconds_field(seg: Mapping[str, Any], name: str, where: str) -> float:
    value = _field(seg, name, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: field {name!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: field {name!r} must be finite and >= 0, got {value!r}")
    return float(value)


def _str_field(seg: Mapping[str, Any], name: str, where: str) -> str:
    value = _field(seg, name, where)
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _parse_numeric(request_id: str, raw: Sequence[Mapping[str, Any]]) -> WorkloadRequest:
    segments: list[TraceSegment] = []
    prompts = []
    for i, seg in enumerate(raw):
        where = f"request {request_id!r} segment {i}"
        prompts.append(_int_field(seg, "prompt_tokens", where, 1))
        out = _int_field(seg, "completion_tokens", where, 1)
        last = i == len(raw) - 1
        if last:
            segments.append(TraceSegment(out))
            continue
        api = _seconds_field(seg, "api_time", where)
        ret = _int_field(seg, "api_token_length", where, 0)
        segments.append(TraceSegment(out, api, ret, has_api=True))
    for i in range(1, len(raw)):
        expected = prompts[i - 1] + segments[i - 1].output_tokens + segments[i - 1].return_tokens
        if prompts[i] != expected:
            raise ValueError(
                f"request {request_id!r} segment {i}: field 'prompt_tokens' is {prompts[i]}, "
                f"but the previous segment's prompt_tokens + completion_tokens + "
                f"api_token_length is {expected}"
            )
    return WorkloadRequest(request_id, prompts[0], tuple(segments))


def _parse_text(request_id: str, raw: Sequence[Mapping[str, Any]]) -> WorkloadRequest:
    segments: list[TraceSegment] = []
    prompt = estimate_tokens(_str_field(raw[0], "prompt", f"request {request_id!r} segment 0"))
    for i, seg in enumerate(raw):
        where = f"request {request_id!r} segment {i}"
        _str_field(seg, "prompt", where)
        out = estimate_tokens(_str_field(seg, "completion", where))
        if i == len(raw) - 1:
            segments.append(TraceSegment(out))
            continue
        api = _seconds_field(seg, "api_time", where)
        ret = estimate_tokens(_str_field(seg, "api_token", where))
        segments.append(TraceSegment(out, api, ret, has_api=True))
    return WorkloadRequest(request_id, prompt, tuple(segments))


def classify(request_id: str, raw: Sequence[Mapping[str, Any]]) -> str:
    """Augmentation type of an InferCept-format request, from its shape."""
    if "prompt" in raw[0]:
        calls = [str(s.get("api_token", "")) for s in raw]
        if any(c.startswith(_TTS_CALL_PREFIX) for c in calls):
            return "chat_tts"
        if any(c.startswith(_IMAGE_CALL_PREFIX) for c in calls):
            return "chat_image"
        return "chat"
    # Numeric segments: virtual-environment prompts are long (~2,000 tokens), QA calls take
    # ~0.7 s and math calls ~0.1 ms (as in shared/workloads/infercept_multi_api.json).
    prompt = raw[0].get("prompt_tokens", 0)
    times = [s["api_time"] for s in raw[:-1] if isinstance(s.get("api_time"), int | float)]
    median = float(np.median(times)) if times else 0.0
    if prompt >= 1500:
        return "virtual_env"
    return "qa" if median >= 0.2 else "math"


def parse_trace(data: Any, name: str = "trace") -> Workload:
    """Builds a workload from an InferCept-format object (``{id: [segment, ...]}``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: top level must be an object {{request_id: [segments]}}")
    requests = []
    for request_id, raw in data.items():
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"request {request_id!r}: must be a non-empty list of segments")
        for i, seg in enumerate(raw):
            if not isinstance(seg, Mapping):
                raise ValueError(f"request {request_id!r} segment {i}: must be an object")
        text = "prompt" in raw[0] and "prompt_tokens" not in raw[0]
        req = _parse_text(request_id, raw) if text else _parse_numeric(request_id, raw)
        kind = classify(request_id, raw)
        requests.append(WorkloadRequest(req.request_id, req.prompt_tokens, req.segments, kind))
    return Workload(name, tuple(requests))


def parse_compact(data: Any, name: str) -> Workload:
    """Builds a workload from the compact format's decoded JSON."""
    requests = []
    for request_id, (kind, prompt, rows) in data["requests"].items():
        segs = tuple(TraceSegment(int(o), float(a), int(r), has_api=bool(h)) for o, a, r, h in rows)
        requests.append(WorkloadRequest(request_id, int(prompt), segs, kind))
    return Workload(name, tuple(requests))


def to_compact(workload: Workload) -> dict[str, Any]:
    """The compact format's JSON object for ``workload``."""
    return {
        "version": 1,
        "requests": {
            r.request_id: [
                r.kind,
                r.prompt_tokens,
                [
                    [s.output_tokens, s.api_seconds, s.return_tokens, int(s.has_api)]
                    for s in r.segments
                ],
            ]
            for r in workload.requests
        },
    }


def write_compact(workload: Workload, path: Path) -> Path:
    """Writes ``workload`` to ``path`` in the compact format (gzip, reproducible bytes)."""
    compact = json.dumps(to_compact(workload), separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(compact, mtime=0))
    return path


class _GapCaps(TypedDict):
    """The gap caps of a kv-cache-tester trace (``lamps.workloads.coding``)."""

    max_human_seconds: float
    max_tool_seconds: float | None


def load_trace(
    path: str | Path,
    *,
    max_human_seconds: float = DEFAULT_MAX_HUMAN_SECONDS,
    max_tool_seconds: float | None = None,
) -> Workload:
    """Loads a trace: an InferCept-format JSON file, a kv-cache-tester trace file or directory
    of them (detected from the content; the gap caps apply to these, see
    ``lamps.workloads.coding``), or a shipped one named ``builtin:NAME``."""
    caps: _GapCaps = {"max_human_seconds": max_human_seconds, "max_tool_seconds": max_tool_seconds}
    text_path = str(path)
    if text_path.startswith("builtin:"):
        key = text_path.removeprefix("builtin:")
        if key in CODING_TRACES:
            from lamps.workloads.coding_pack import load_builtin_coding

            return load_builtin_coding(**caps)
        if key == "infercept-single-api":
            from lamps.workloads.variants import single_api

            return single_api(load_trace("builtin:infercept-multi-api"), key)
        if key == "agent":
            from lamps.workloads.agent import agent_workload

            return agent_workload(400, seed=0)
        if key not in BUILTIN_TRACES:
            known = sorted([*BUILTIN_TRACES, *GENERATED_TRACES, *CODING_TRACES])
            raise ValueError(f"unknown builtin trace {key!r}; known: {known}")
        raw = resources.files("lamps.data").joinpath(BUILTIN_TRACES[key]).read_bytes()
        return parse_compact(json.loads(gzip.decompress(raw)), key)
    p = Path(path)
    if p.is_dir():
        return load_coding_traces(p, **caps)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    data = read_json(p)
    if is_kvcache_trace(data):
        return Workload(p.stem, (parse_coding_trace(data, str(p), **caps),))
    return parse_trace(data, p.stem)
