"""Augmented-LLM workloads: InferCept-format traces, a synthetic generator, Poisson arrivals.

A request is a list of segments: decode ``output_tokens``, then (except after the last one) an
external API call that lasts ``api_seconds`` and appends ``return_tokens`` to the context.

Trace files use the InferCept format: a JSON object ``{request_id: [segment, ...]}`` where each
segment is either numeric (``prompt_tokens``, ``completion_tokens``, ``api_time``,
``api_token_length``; ``prompt_tokens`` is the full context at the segment's start) or text
(``prompt``, ``completion``, ``api_token``, ``api_time``; token counts are estimated from the
text because no tokenizer is assumed to be available). An API call on the last segment is
dropped: nothing is generated after it, so it cannot affect the engine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("math", "qa", "virtual_env", "chat", "chat_image", "chat_tts")
"""The six augmentation types of the InferCept mixture."""

CHARS_PER_TOKEN = 4.0
"""Average characters per GPT-2/GPT-J BPE token on English text (text traces only)."""

BUILTIN_TRACES = {"infercept-multi-api": "infercept_multi_api.segments.json.gz"}
"""Traces shipped in lamps/data (token counts only), usable as ``--trace builtin:NAME``."""

_STATS_FILE = "augmentation_stats.json"
_QUANTILES = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class TraceSegment:
    """One decode phase of a request and the API call that follows it (if any)."""

    output_tokens: int
    api_seconds: float = 0.0
    return_tokens: int = 0
    has_api: bool = False


@dataclass(frozen=True)
class WorkloadRequest:
    """A request template: its first prompt and its segments."""

    request_id: str
    prompt_tokens: int
    segments: tuple[TraceSegment, ...]
    kind: str = "unknown"

    @property
    def num_api_calls(self) -> int:
        """Number of API calls (segments followed by a call)."""
        return sum(1 for s in self.segments if s.has_api)

    @property
    def output_tokens(self) -> int:
        """Tokens the engine generates over all segments."""
        return sum(s.output_tokens for s in self.segments)

    @property
    def api_seconds(self) -> float:
        """Total duration of the request's API calls."""
        return sum(s.api_seconds for s in self.segments if s.has_api)

    @property
    def return_tokens(self) -> int:
        """Tokens appended to the context by all API calls."""
        return sum(s.return_tokens for s in self.segments if s.has_api)

    @property
    def final_context_tokens(self) -> int:
        """Context length after the last generated token."""
        return self.prompt_tokens + self.output_tokens + self.return_tokens

    def context_before(self, segment_index: int) -> int:
        """Context length at the start of segment ``segment_index``."""
        ctx = self.prompt_tokens
        for s in self.segments[:segment_index]:
            ctx += s.output_tokens + (s.return_tokens if s.has_api else 0)
        return ctx


@dataclass(frozen=True)
class Workload:
    """A set of request templates that arrivals are sampled from."""

    name: str
    requests: tuple[WorkloadRequest, ...]

    def __post_init__(self) -> None:
        if not self.requests:
            raise ValueError(f"workload {self.name!r}: no requests")

    @property
    def max_context_tokens(self) -> int:
        """Longest context any request reaches."""
        return max(r.final_context_tokens for r in self.requests)

    def kind_counts(self) -> dict[str, int]:
        """Number of requests of each augmentation type."""
        return dict(Counter(r.kind for r in self.requests))


@dataclass(frozen=True)
class Arrival:
    """One request instance: a template arriving at a time."""

    index: int
    time: float
    request: WorkloadRequest

    @property
    def request_id(self) -> str:
        """Unique id of this instance (templates repeat when sampled with replacement)."""
        return f"r{self.index}"


# --------------------------------------------------------------------------------------------
# Trace loading
# --------------------------------------------------------------------------------------------


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
        if any(c.startswith("Convert this to text to speech") for c in calls):
            return "chat_tts"
        if any(c.startswith("Generate an image") for c in calls):
            return "chat_image"
        return "chat"
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


def _parse_compact(data: Any, name: str) -> Workload:
    requests = []
    for request_id, (kind, prompt, rows) in data["requests"].items():
        segs = tuple(TraceSegment(int(o), float(a), int(r), has_api=bool(h)) for o, a, r, h in rows)
        requests.append(WorkloadRequest(request_id, int(prompt), segs, kind))
    return Workload(name, tuple(requests))


def load_trace(path: str | Path) -> Workload:
    """Loads an InferCept-format JSON trace, or a shipped one named ``builtin:NAME``."""
    text_path = str(path)
    if text_path.startswith("builtin:"):
        key = text_path.removeprefix("builtin:")
        if key not in BUILTIN_TRACES:
            raise ValueError(f"unknown builtin trace {key!r}; known: {sorted(BUILTIN_TRACES)}")
        raw = resources.files("lamps.data").joinpath(BUILTIN_TRACES[key]).read_bytes()
        return _parse_compact(json.loads(gzip.decompress(raw)), key)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    return parse_trace(data, p.stem)


# --------------------------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------------------------


def _quantiles(values: Iterable[float], digits: int) -> list[float]:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return [0.0] * len(_QUANTILES)
    return [round(float(q), digits) for q in np.quantile(arr, _QUANTILES)]


def derive_stats(workload: Workload, source: str) -> dict[str, Any]:
    """Per-type statistics (weights, call counts, quantile tables) the generator samples from."""
    kinds: dict[str, Any] = {}
    total = len(workload.requests)
    for kind in KINDS:
        reqs = [r for r in workload.requests if r.kind == kind]
        if not reqs:
            continue
        # Chat with TTS/image alternates two kinds of call (the tool, then the human reply).
        num_phases = 2 if kind in ("chat_image", "chat_tts") else 1
        phases = []
        for p in range(num_phases):
            segs = [s for r in reqs for j, s in enumerate(r.segments) if s.has_api and j % 2 == p]
            if num_phases == 1:
                segs = [s for r in reqs for s in r.segments if s.has_api]
            phases.append(
                {
                    "output_tokens": _quantiles((s.output_tokens for s in segs), 1),
                    "api_seconds": _quantiles((s.api_seconds for s in segs), 6),
                    "return_tokens": _quantiles((s.return_tokens for s in segs), 1),
                }
            )
        calls = Counter(r.num_api_calls for r in reqs)
        kinds[kind] = {
            "weight": round(len(reqs) / total, 4),
            "calls_pmf": {str(k): round(v / len(reqs), 4) for k, v in sorted(calls.items())},
            "prompt_tokens": _quantiles((r.prompt_tokens for r in reqs), 1),
            "final_output_tokens": _quantiles((r.segments[-1].output_tokens for r in reqs), 1),
            "phases": phases,
        }
    return {"version": 1, "source": source, "quantiles": len(_QUANTILES), "kinds": kinds}


def load_stats() -> dict[str, Any]:
    """The shipped per-type statistics of the InferCept multi-API mixture."""
    return json.loads(resources.files("lamps.data").joinpath(_STATS_FILE).read_text())


def _sample_table(table: Sequence[float], rng: np.random.Generator) -> float:
    return float(np.interp(rng.random(), np.linspace(0.0, 1.0, len(table)), table))


def _validate_stats(stats: Mapping[str, Any]) -> None:
    kinds = stats.get("kinds")
    if not isinstance(kinds, Mapping) or not kinds:
        raise ValueError("stats: field 'kinds' must be a non-empty object")
    for kind, k in kinds.items():
        for name in ("weight", "calls_pmf", "prompt_tokens", "final_output_tokens", "phases"):
            if name not in k:
                raise ValueError(f"stats kind {kind!r}: missing field {name!r}")
        if not k["phases"] and any(int(c) > 0 for c in k["calls_pmf"]):
            raise ValueError(f"stats kind {kind!r}: field 'phases' is empty but calls > 0")


def synthetic_workload(
    num_requests: int = 397, seed: int = 0, stats: Mapping[str, Any] | None = None
) -> Workload:
    """Generates request templates of the six augmentation types from their statistics."""
    if num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    stats = load_stats() if stats is None else stats
    _validate_stats(stats)
    rng = np.random.default_rng(seed)
    names = list(stats["kinds"])
    weights = np.array([stats["kinds"][n]["weight"] for n in names], dtype=float)
    weights /= weights.sum()
    requests = []
    for i in range(num_requests):
        kind = names[int(rng.choice(len(names), p=weights))]
        k = stats["kinds"][kind]
        pmf = k["calls_pmf"]
        counts = [int(c) for c in pmf]
        probs = np.array([pmf[c] for c in pmf], dtype=float)
        calls = counts[int(rng.choice(len(counts), p=probs / probs.sum()))]
        segments = []
        for j in range(calls):
            ph = k["phases"][j % len(k["phases"])]
            segments.append(
                TraceSegment(
                    output_tokens=max(1, round(_sample_table(ph["output_tokens"], rng))),
                    api_seconds=max(0.0, _sample_table(ph["api_seconds"], rng)),
                    return_tokens=max(0, round(_sample_table(ph["return_tokens"], rng))),
                    has_api=True,
                )
            )
        final = max(1, round(_sample_table(k["final_output_tokens"], rng)))
        segments.append(TraceSegment(final))
        prompt = max(1, round(_sample_table(k["prompt_tokens"], rng)))
        requests.append(WorkloadRequest(f"syn{i}", prompt, tuple(segments), kind))
    return Workload(f"synthetic-{seed}", tuple(requests))


# --------------------------------------------------------------------------------------------
# Arrivals
# --------------------------------------------------------------------------------------------


def poisson_arrivals(
    workload: Workload, qps: float, duration: float, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``qps`` over ``[0, duration)``, templates sampled with replacement."""
    if not (math.isfinite(qps) and qps > 0):
        raise ValueError(f"qps must be finite and > 0, got {qps}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be finite and > 0, got {duration}")
    rng = np.random.default_rng(seed)
    arrivals: list[Arrival] = []
    t = 0.0
    while True:
        t += float(rng.exponential(1.0 / qps))
        if t >= duration:
            return arrivals
        template = workload.requests[int(rng.integers(len(workload.requests)))]
        arrivals.append(Arrival(len(arrivals), t, template))


# --------------------------------------------------------------------------------------------
# Shipping the default data (python -m lamps.workloads derive TRACE)
# --------------------------------------------------------------------------------------------


def _compact(workload: Workload) -> dict[str, Any]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """``derive TRACE OUT_DIR``: write the statistics and the compact trace that lamps ships."""
    parser = argparse.ArgumentParser(prog="python -m lamps.workloads")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("derive", help="derive lamps/data files from an InferCept trace")
    d.add_argument("trace", type=Path)
    d.add_argument("out_dir", type=Path)
    d.add_argument("--builtin-name", default="infercept-multi-api")
    args = parser.parse_args(argv)
    workload = load_trace(args.trace)
    stats = derive_stats(workload, args.trace.name)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / _STATS_FILE).write_text(json.dumps(stats, separators=(",", ":")) + "\n")
    compact = json.dumps(_compact(workload), separators=(",", ":")).encode()
    target = args.out_dir / BUILTIN_TRACES.get(args.builtin_name, f"{args.builtin_name}.json.gz")
    target.write_bytes(gzip.compress(compact, mtime=0))
    print(f"kinds: {workload.kind_counts()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
