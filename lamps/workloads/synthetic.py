"""The synthetic mixture: per-type statistics of a trace, the shipped ones, and the generator."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lamps.workloads.model import KINDS, TraceSegment, Workload, WorkloadRequest

STATS_FILE = "augmentation_stats.json"
"""The shipped statistics in lamps/data (derived from the builtin InferCept trace)."""

_QUANTILES = np.linspace(0.0, 1.0, 21)


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


def write_stats(stats: Mapping[str, Any], path: Path) -> Path:
    """Writes statistics in the shipped file's layout (compact JSON, one line)."""
    path.write_text(json.dumps(stats, separators=(",", ":")) + "\n")
    return path


def load_stats() -> dict[str, Any]:
    """The shipped per-type statistics of the InferCept multi-API mixture."""
    stats: dict[str, Any] = json.loads(
        resources.files("lamps.data").joinpath(STATS_FILE).read_text()
    )
    return stats


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


SYNTHETIC_REQUESTS = 397
"""The mixture's default size: as many requests as InferCept's multi-API trace."""


def synthetic_workload(
    num_requests: int = SYNTHETIC_REQUESTS, seed: int = 0, stats: Mapping[str, Any] | None = None
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
