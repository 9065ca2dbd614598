"""Stateless-API evaluation: agents served over the OpenAI API, per turn and per program.

Over the OpenAI API every turn of an agent program is a new request that resends the whole
conversation; what a scheduler can save between turns is the KV of the conversation so far.
This replays the agent trace (`builtin:agent`) in the replay's stateless API mode for the
policies given (`vllm`: prefix cache only; `lamps-stateless`: `lamps.vllm.sessions`; any other
registered stateless policy, e.g. a Continuum baseline) on identical arrivals, several seeds
per rate, and reports with 95% t-intervals over seeds:
- per turn: latency from the turn's request to its last token (mean, P99), and the prompt
  tokens it found computed (KV recovered: its context minus what the engine computed for it);
- per program: end-to-end latency (mean, P99) and TTFT (mean, P99).
Turn boundaries come from the records the replay keeps: a turn ends when its tool call starts
and the next starts when the call returns.

    lamps stateless-eval --qps 0.5,1,2 --seeds 0-4 --duration 300
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lamps.logs import apply_vllm_logs
from lamps.replay.provenance import provenance, require_clean
from lamps.replay.records import RequestRecord
from lamps.replay.runner import ReplayConfig, run_one
from lamps.replay.stats import interval
from lamps.workloads import load_trace, poisson_arrivals


def turn_latencies(rec: RequestRecord) -> list[float]:
    """Seconds from each turn's request to its last token (finished programs only)."""
    if rec.finish_time is None:
        return []
    starts = [rec.arrival.time] + [end for _, end in rec.api_calls]
    ends = [start for start, _ in rec.api_calls] + [rec.finish_time]
    return [e - s for s, e in zip(starts, ends, strict=True)]


def recovered_tokens(rec: RequestRecord) -> int:
    """Prompt tokens of the program's turns that the engine did not compute (found cached).

    Each turn's request carries the whole context so far; everything scheduled for it beyond
    its new tokens was recomputed. Summed over turns: contexts plus outputs minus scheduled.
    """
    tmpl = rec.arrival.request
    # A turn computed from scratch schedules its context and all its outputs but the last.
    needed = sum(tmpl.context_before(k) + s.output_tokens - 1
                 for k, s in enumerate(tmpl.segments))  # fmt: skip
    return max(0, needed - rec.scheduled_tokens)


@dataclass
class _Collected:
    turns: list[float] = field(default_factory=list)
    programs: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    num_turns: int = 0

    def add(self, rec: RequestRecord) -> None:
        lat = turn_latencies(rec)
        self.turns += lat
        self.num_turns += len(lat)
        self.programs.append(rec.finish_time - rec.arrival.time)  # type: ignore[operator]
        if rec.first_token_time is not None:
            self.ttft.append(rec.first_token_time - rec.arrival.time)
        self.recovered.append(recovered_tokens(rec))


def run_point(args: tuple[str, float, int, float, str, float]) -> dict[str, Any]:
    """One (policy, rate, seed): per-turn and per-program figures of the finished programs."""
    policy, qps, seed, duration, profile, noise = args
    apply_vllm_logs()
    workload = load_trace("builtin:agent")
    config = ReplayConfig(policies=(policy,), qps=(qps,), duration=duration, profile=profile,
                          seed=seed, drain=3.0, noise=noise)  # fmt: skip
    arrivals = poisson_arrivals(workload, qps, duration, seed)
    got = _Collected()
    row = run_one(workload, config, policy, qps, arrivals,
                  on_finish=lambda rec: got.add(rec))  # fmt: skip
    turns, programs = np.array(got.turns), np.array(got.programs)
    ttft = np.array(got.ttft)
    return {
        "policy": policy,
        "qps": qps,
        "seed": seed,
        "programs": len(got.programs),
        "turns": got.num_turns,
        "turn_mean": float(turns.mean()) if turns.size else math.nan,
        "turn_p99": float(np.percentile(turns, 99)) if turns.size else math.nan,
        "program_mean": float(programs.mean()) if programs.size else math.nan,
        "program_p99": float(np.percentile(programs, 99)) if programs.size else math.nan,
        "ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
        "ttft_p99": float(np.percentile(ttft, 99)) if ttft.size else math.nan,
        "recovered_per_turn": sum(got.recovered) / max(got.num_turns, 1),
        "finished_fraction": len(got.programs) / max(len(arrivals), 1),
        "replay_row": row,
    }


METRICS = ("turn_mean", "turn_p99", "program_mean", "program_p99", "ttft_mean", "ttft_p99",
           "recovered_per_turn", "finished_fraction")  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each (rate, policy) with mean [95% interval] over seeds per metric."""
    lines = ["| qps | policy | seeds | " + " | ".join(METRICS) + " |",
             "|---:|---|---:|" + "---:|" * len(METRICS)]  # fmt: skip
    keys = sorted({(r["qps"], r["policy"]) for r in rows})
    for qps, policy in keys:
        sel = [r for r in rows if r["qps"] == qps and r["policy"] == policy]
        cells = [interval(r[m] for r in sel).format("{:.3g}") for m in METRICS]
        lines.append(f"| {qps:g} | {policy} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> str:
    """``lamps stateless-eval``: runs the evaluation with the command's options, writes
    results.json and table.md into ``args.out``; returns the table (provenance first)."""
    prov = provenance()
    require_clean(prov, args.allow_dirty)
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    points = [(pol, float(q), s, args.duration, args.profile, args.noise)
              for q in args.qps.split(",") for pol in args.policies.split(",")
              for s in seeds]  # fmt: skip
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_point, points))
    args.out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in ("command", "run")}
    header = {"provenance": prov.as_dict(), "command": options}
    (args.out / "results.json").write_text(
        json.dumps({**header, "rows": rows}, indent=1, default=str)
    )
    text = prov.banner() + "\n\n" + table(rows)
    (args.out / "table.md").write_text(text + "\n")
    return text
