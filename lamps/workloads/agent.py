"""A modern agent trace, generated from published statistics (no real trace is shipped).

A *program* (one agent task) is a session of turns: the model decodes, calls a tool, the
tool's output is appended to the context, and the model decodes again, so the context grows
turn by turn. Each program is one ``WorkloadRequest``: its segments are the turns, each
followed by a tool call except the last.

Statistics and their sources (``shared/docs/baselines-and-evaluation.md`` section 5):
- turns per program: SWE-Bench ~10.9, BFCL ~6.3 (Continuum, arXiv 2511.02230); production
  agent sessions: median 43 turns, ~142k input and ~444 output tokens per session, prefix-cache
  hit rate > 96% (vLLM's agent-serving write-ups);
- tool time: 86.46% of a program's next requests came within 1 s of the previous answer and
  95.12% within 10 s (a coding-agent trace, 32 tasks); here a tool call lasts 0.05-1 s with
  probability 0.86, 1-10 s with 0.09 and 10-60 s with 0.05 (log-uniform within each band).
What is this project's choice, not a source's: the per-turn token distributions
(log-normal, medians in ``PRESETS``), the mixture weights (40% SWE-Bench-like, 40% BFCL-like,
20% production-like) and the 60,000-token context cap. Production's per-session totals fix
its per-turn medians: 142k input over 43 turns from a 1,500-token start is ~86 new tokens a
turn (tool output plus the model's ~10), which also gives its ~97% prefix-cache hit rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lamps.workloads.model import TraceSegment, Workload, WorkloadRequest

MAX_CONTEXT = 60_000
"""Programs stop taking turns before their context would pass this (Llama-3.1-8B at 64k)."""

TOOL_TIME_BANDS = ((0.86, 0.05, 1.0), (0.09, 1.0, 10.0), (0.05, 10.0, 60.0))
"""(probability, low s, high s): 86% within 1 s, 95% within 10 s."""


@dataclass(frozen=True)
class AgentPreset:
    """Per-program statistics of one kind of agent."""

    name: str
    mean_turns: float
    turns_sigma: float  # log-normal spread of the number of turns
    prompt_median: float
    output_median: float
    tool_output_median: float
    sigma: float = 0.8  # log-normal spread of the token counts


PRESETS = {
    "swe-bench": AgentPreset("swe-bench", 10.9, 0.6, 2500, 120, 400),
    "bfcl": AgentPreset("bfcl", 6.3, 0.5, 1500, 60, 100),
    "production": AgentPreset("production", 43.0, 0.5, 1500, 10, 76, sigma=0.6),
}
MIXTURE = {"swe-bench": 0.4, "bfcl": 0.4, "production": 0.2}


def tool_seconds(rng: np.random.Generator) -> float:
    """One tool call's duration from ``TOOL_TIME_BANDS``."""
    u = rng.random()
    for p, lo, hi in TOOL_TIME_BANDS:
        if u < p:
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        u -= p
    return TOOL_TIME_BANDS[-1][2]


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> int:
    return max(1, round(median * math.exp(sigma * rng.standard_normal())))


def _turns(rng: np.random.Generator, preset: AgentPreset) -> int:
    if preset.name == "production":  # the source gives the median
        median = preset.mean_turns
    else:  # a log-normal with the source's mean
        median = preset.mean_turns / math.exp(preset.turns_sigma**2 / 2)
    return max(1, round(median * math.exp(preset.turns_sigma * rng.standard_normal())))


def agent_program(
    rng: np.random.Generator, preset: AgentPreset, request_id: str
) -> WorkloadRequest:
    """One program: turns of decoding separated by tool calls, context capped."""
    prompt = min(_lognormal(rng, preset.prompt_median, preset.sigma), MAX_CONTEXT // 4)
    turns = _turns(rng, preset)
    context = prompt
    segments: list[TraceSegment] = []
    for k in range(turns):
        out = _lognormal(rng, preset.output_median, preset.sigma)
        ret = _lognormal(rng, preset.tool_output_median, preset.sigma)
        last = k == turns - 1 or context + out + ret + preset.output_median * 4 > MAX_CONTEXT
        if last:
            segments.append(TraceSegment(min(out, MAX_CONTEXT - context)))
            break
        segments.append(TraceSegment(out, tool_seconds(rng), ret, has_api=True))
        context += out + ret
    return WorkloadRequest(request_id, prompt, tuple(segments), preset.name)


def agent_workload(
    num_programs: int = 400, seed: int = 0, mixture: dict[str, float] | None = None
) -> Workload:
    """``num_programs`` programs drawn from the presets in ``mixture`` (default ``MIXTURE``)."""
    if num_programs < 1:
        raise ValueError(f"num_programs must be >= 1, got {num_programs}")
    mixture = mixture or MIXTURE
    unknown = set(mixture) - set(PRESETS)
    if unknown:
        raise ValueError(f"unknown agent presets {sorted(unknown)}; known: {sorted(PRESETS)}")
    names = list(mixture)
    weights = np.array([mixture[n] for n in names], dtype=float)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    programs = []
    for i in range(num_programs):
        preset = PRESETS[names[int(rng.choice(len(names), p=weights))]]
        programs.append(agent_program(rng, preset, f"agent{i}"))
    return Workload(f"agent-{seed}", tuple(programs))
