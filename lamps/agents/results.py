"""A run of ``lamps agents`` as the replay's closed-loop rows, and the files it writes.

A row is a ``lamps replay --users`` row (``lamps.replay.turn_metrics`` over the turns sent in
``[warmup * duration, end of run)``; the same keys, table and plots) with ``engine: "http"``,
the URL and model, and the server's own counts in place of the simulator's: a turn's cached
tokens are the server's ``usage.prompt_tokens_details.cached_tokens``, its prefill the prompt
tokens less those. Where the server reports no cached tokens (vLLM without
``--enable-prompt-tokens-details``) ``prefix_hit_rate`` and ``prefill_tokens_per_turn`` are
None and ``cached_tokens_reported`` is false; what a client cannot see at all
(``kv_loaded_tokens``, ``swap_gb``) is None. A failed turn counts as a turn never served (its
TTFT infinitely late), as a turn still waiting at the window's end does.

Nothing goes missing: ``turns_sent = turns_done + turns_failed + turns_cut``, and
``turns_unsent`` counts the turns of started conversations that were never sent (after a failed
turn, or not reached when the run ended); ``conversations_started`` splits into ``_done``,
``_failed`` and ``_open`` (still going at the end). ``server_counters``: how much each of the
server's ``lamps_*_total`` and ``vllm:prefix_cache_*_total`` counters grew during the run
(its ``/metrics``; absent where it has none). ``turns.jsonl`` has every turn sent,
``conversations.jsonl`` every conversation started.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamps.agents.loop import CUT, DONE, FAILED, AgentsRun, HttpTurn, RunOutcome
from lamps.replay.metrics import read_rows
from lamps.replay.report import format_knees, format_markdown, format_table
from lamps.replay.turn_metrics import turn_metrics
from lamps.workloads.coding import TracedConversation

UNSEEN = ("kv_loaded_tokens", "swap_gb")
"""Replay metrics an HTTP client cannot observe (None in its rows, left out of its table)."""
TABLE_COLUMNS = (
    "ttft_p95",
    "ttft_mean",
    "ttft_p99",
    "turn_latency_mean",
    "turn_latency_p95",
    "conversation_latency_mean",
    "prefill_tokens_per_turn",
    "prefix_hit_rate",
)


def counter_totals(metrics_text: str | None) -> dict[str, float]:
    """The server's ``lamps_*_total`` and ``vllm:prefix_cache_*_total`` counters, summed over
    their labels."""
    totals: dict[str, float] = {}
    for line in (metrics_text or "").splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        wanted = name.startswith("lamps_") or name.startswith("vllm:prefix_cache_")
        if not line.startswith("#") and wanted and name.endswith("_total"):
            try:
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return totals


def _http_turns(outcome: RunOutcome) -> list[HttpTurn]:
    return [t for r in outcome.records for t in r.turns if isinstance(t, HttpTurn)]


def accounting(outcome: RunOutcome) -> dict[str, Any]:
    """What happened to every turn and conversation of the run (module docstring)."""
    turns = _http_turns(outcome)
    status = Counter(t.status for t in turns)
    done = [t for t in turns if t.status == DONE]
    total = sum(len(r.arrival.request.segments) for r in outcome.records)
    finished = {r.arrival.index for r in outcome.records if r.finish_time is not None}
    kinds = Counter(e.split(":", 1)[0] for t in turns for e in t.errors)
    return {
        "turns_sent": len(turns),
        "turns_done": status[DONE],
        "turns_failed": status[FAILED],
        "turns_cut": status[CUT],
        "turns_unsent": total - len(turns),
        "turns_retried": sum(t.attempts > 1 for t in turns),
        "failed_attempts": sum(len(t.errors) for t in turns),
        "errors_by_kind": dict(kinds),
        "output_tokens_short": sum(t.output_tokens != t.expected_output for t in done),
        "prompt_tokens_mismatched": sum(t.prompt_tokens != t.input_tokens for t in done),
        "cached_tokens_reported": bool(done) and all(t.cached is not None for t in done),
        "conversations_started": len(outcome.records),
        "conversations_done": len(finished - outcome.failed),
        "conversations_failed": len(outcome.failed),
        "conversations_open": len(outcome.records) - len(finished),
    }


def run_row(
    outcome: RunOutcome, run: AgentsRun, *, warmup: float, meta: dict[str, Any]
) -> dict[str, Any]:
    """The results row of one run (``meta``: label, URL, model, workload, scale, ...)."""
    settings = run.settings
    metrics = turn_metrics(
        outcome.records,
        start=warmup * settings.duration,
        end=outcome.end,
        top_level=outcome.top_level - outcome.failed,
        swapped_bytes=0.0,
    )
    counts = accounting(outcome)
    if not counts["cached_tokens_reported"]:
        metrics["prefix_hit_rate"] = None
        metrics["prefill_tokens_per_turn"] = None
    metrics.update(dict.fromkeys(UNSEEN))
    return {
        "policy": meta["label"],
        "users": settings.users,
        "qps": None,
        "seed": settings.seed,
        "engine": "http",
        **meta,
        "duration": settings.duration,
        "warmup": warmup,
        "conversations_cap": settings.conversations,
        "hints": settings.hints,
        "warm_prefix_tokens": outcome.warm_prefix_tokens,
        "interrupted": outcome.interrupted,
        "sessions_closed": outcome.sessions_closed,
        "answer_tokens_spliced": outcome.spliced_tokens,
        **metrics,
        **counts,
    }


def turn_lines(outcome: RunOutcome, run: AgentsRun, label: str) -> list[dict[str, Any]]:
    """One JSON object per turn sent (times in seconds since the run started)."""
    out = []
    for rec in outcome.records:
        for t in rec.turns:
            assert isinstance(t, HttpTurn)
            out.append({
                "policy": label, "users": run.settings.users, "seed": run.settings.seed,
                "conversation": rec.arrival.request_id, "session": run.session_id(rec),
                "turn": t.segment, "status": t.status, "sent": t.sent,
                "first_token": t.first_token, "finish": t.finish,
                "ttft": None if t.first_token is None else t.first_token - t.sent,
                "latency": None if t.finish is None else t.finish - t.sent,
                "input_tokens": t.input_tokens, "prompt_tokens": t.prompt_tokens,
                "cached_tokens": t.cached, "output_tokens": t.output_tokens,
                "expected_output_tokens": t.expected_output, "attempts": t.attempts,
                "errors": t.errors,
            })  # fmt: skip
    return out


def conversation_lines(outcome: RunOutcome, run: AgentsRun, label: str) -> list[dict[str, Any]]:
    """One JSON object per conversation started."""
    out = []
    for rec in outcome.records:
        conv = rec.arrival.request
        assert isinstance(conv, TracedConversation)
        finish = rec.finish_time
        status = "done" if finish is not None else "open"
        if rec.arrival.index in outcome.failed:
            status = "failed"
        out.append({
            "policy": label, "users": run.settings.users, "seed": run.settings.seed,
            "conversation": conv.request_id, "session": run.session_id(rec),
            "user_conversation": rec.arrival.index in outcome.top_level,
            "status": status, "turns": len(conv.turns), "turns_sent": len(rec.turns),
            "started": rec.arrival.time, "finished": rec.finish_time,
            "latency": None if finish is None or status != "done" else finish - rec.arrival.time,
        })  # fmt: skip
    return out


def write_jsonl(path: Path, lines: Sequence[dict[str, Any]], *, append: bool) -> Path:
    """Writes (or appends) one JSON object per line."""
    with path.open("a" if append else "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return path


def merged_rows(out: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``out``'s earlier rows (``--append``), less those this invocation measured again."""
    path = out / "results.json"
    if not path.exists():
        return list(rows)
    keys = {(r["policy"], r["users"], r["seed"]) for r in rows}
    old = [r for r in read_rows(path) if (r["policy"], r["users"], r["seed"]) not in keys]
    return [*old, *rows]


def write_tables(rows: Sequence[dict[str, Any]], out: Path, *, banner: str, slo: float) -> str:
    """Writes results.json's companions table.md and knees.md; returns the terminal table."""
    knees = format_knees(rows, slo)
    (out / "table.md").write_text(f"{banner}\n\n{format_markdown(rows, TABLE_COLUMNS)}\n")
    (out / "knees.md").write_text(f"{banner}\n\nSLO: per-turn p95 TTFT <= {slo:g} s\n\n{knees}\n")
    return format_table(rows, TABLE_COLUMNS)
