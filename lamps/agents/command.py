"""``lamps agents``: its options, and a sweep of runs (users x seeds) against one server."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_OUT = Path("agents-results")
DEFAULT_VOCAB = 32000
"""Token ids are drawn below this: the smallest vocabulary of common models (Llama-2, Mistral);
set ``--vocab-size`` to the model's for a smaller one."""


def add_agents_parser(sub: Any) -> None:
    """Adds the ``agents`` subcommand to the ``lamps`` parser."""
    from lamps.replay.options import USERS_DURATION, parse_seeds, parse_user_counts
    from lamps.replay.report import DEFAULT_SLO_TTFT_P99
    from lamps.workloads import DEFAULT_MAX_HUMAN_SECONDS

    a = sub.add_parser(
        "agents",
        help="replay coding-agent traces against an OpenAI-compatible server",
        description="Closed-loop users replay traced coding-agent conversations (sub-agents "
        "included) against a server as streaming /v1/completions requests of token ids, with "
        "session ids and LAMPS hints, and measure per-turn TTFT, latency and cached prompt "
        "tokens into the tables and plots of `lamps replay --users` (docs/agents.md).",
    )
    a.add_argument("--url", required=True, help="the server's OpenAI base URL, http://HOST:PORT/v1")
    a.add_argument("--model", default=None, help="model name (default: the server's only one)")
    a.add_argument(
        "--trace",
        default="builtin:claude-code",
        help="kv-cache-tester trace file or directory, or builtin:claude-code (the default)",
    )
    a.add_argument(
        "--users", type=parse_user_counts, required=True, help="user counts, e.g. 4,8,16"
    )
    a.add_argument(
        "--duration",
        type=float,
        default=USERS_DURATION,
        help=f"seconds per run (default {USERS_DURATION:g}); measured after --warmup",
    )
    a.add_argument("--seeds", type=parse_seeds, default=(0,), help="trace-order seeds (default 0)")
    a.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every token count by this (0-1], keeping each trace block's place "
        "(for small servers; docs/agents.md)",
    )
    a.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB,
        help=f"token ids are drawn below this (default {DEFAULT_VOCAB}; at most the model's)",
    )
    a.add_argument(
        "--conversations",
        type=int,
        default=None,
        help="end a run once this many users' conversations have started and ended "
        "(default: users go on until --duration)",
    )
    a.add_argument(
        "--max-human-seconds",
        type=float,
        default=DEFAULT_MAX_HUMAN_SECONDS,
        help=f"cap on a person's gap before an input (default {DEFAULT_MAX_HUMAN_SECONDS:g}, "
        "as lamps replay)",
    )
    a.add_argument(
        "--max-tool-seconds", type=float, default=None, help="cap on a tool's gap (default: none)"
    )
    a.add_argument(
        "--warm-prefix",
        type=float,
        default=0.5,
        help="fraction of the largest tool+system prefix shared by all conversations (0.5)",
    )
    a.add_argument("--warmup", type=float, default=0.1, help="window start, fraction (0.1)")
    a.add_argument("--retries", type=int, default=2, help="retries of a failed request (2)")
    a.add_argument(
        "--retry-delay", type=float, default=1.0, help="seconds before the first retry (doubling)"
    )
    a.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds a request may go without a byte from the server (600)",
    )
    a.add_argument("--api-key", default=None, help="sent as a bearer token")
    a.add_argument(
        "--label",
        default="http",
        help="the rows' policy name, e.g. lamps or vllm (default http)",
    )
    a.add_argument(
        "--no-hints", action="store_true", help="send no vllm_xargs (LAMPS hints, session_end)"
    )
    a.add_argument("--slo", type=float, default=DEFAULT_SLO_TTFT_P99, help="knee SLO, p95 TTFT s")
    a.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a.add_argument(
        "--append",
        action="store_true",
        help="keep --out's earlier rows (another label, say) and draw the table over all",
    )
    a.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from a checkout of vllm-lamps with uncommitted changes (results marked DIRTY)",
    )
    a.add_argument("--no-plots", action="store_true")


def base_url(url: str) -> str:
    """``url`` with ``/v1`` added when it names no path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url: expected http://HOST:PORT/v1, got {url!r}")
    return url.rstrip("/") + ("/v1" if parts.path in ("", "/") else "")


def _check(args: argparse.Namespace) -> None:
    if not (args.duration > 0 and 0 <= args.warmup < 1):
        raise ValueError(f"need --duration > 0 and 0 <= --warmup < 1, got {args.duration}, "
                         f"{args.warmup}")  # fmt: skip
    if args.conversations is not None and args.conversations < 1:
        raise ValueError(f"--conversations: must be >= 1, got {args.conversations}")
    if not 0 <= args.warm_prefix <= 1:
        raise ValueError(f"--warm-prefix: must be in [0, 1], got {args.warm_prefix}")
    if args.vocab_size < 2:
        raise ValueError(f"--vocab-size: must be >= 2, got {args.vocab_size}")


def _pick_model(models: list[dict[str, Any]], wanted: str | None, url: str) -> dict[str, Any]:
    names = [str(m.get("id")) for m in models]
    if wanted is None:
        if len(models) != 1:
            raise ValueError(f"{url} serves {names}: name one with --model")
        return models[0]
    for m in models:
        if m.get("id") == wanted:
            return m
    raise ValueError(f"{url} does not serve model {wanted!r}; it serves {names}")


async def _sweep(args: argparse.Namespace, workload: Any, factor: float, on_row: Any) -> bool:
    """Runs every (users, seed); ``on_row(row, turns, conversations)`` after each; whether it
    was interrupted."""
    from lamps.agents.client import CompletionClient
    from lamps.agents.conversations import longest_context
    from lamps.agents.loop import AgentsRun, RunSettings
    from lamps.agents.progress import ProgressLine
    from lamps.agents.prompts import TokenSpace
    from lamps.agents.results import conversation_lines, counter_totals, run_row, turn_lines

    url = base_url(args.url)
    client = CompletionClient(
        url, clock=time.perf_counter, timeout=args.request_timeout, retries=args.retries,
        retry_delay=args.retry_delay, api_key=args.api_key,
    )  # fmt: skip
    async with client:
        model = _pick_model(await client.models(), args.model, url)
        need, where = longest_context(workload)
        limit = model.get("max_model_len")
        if isinstance(limit, int) and need > limit:
            raise ValueError(
                f"{where} needs {need} tokens at --scale {args.scale:g}; the server's "
                f"max_model_len is {limit}: lower --scale to {args.scale * limit / need:.3g}"
            )
        print(
            f"server {url}: model {model['id']} (max_model_len {limit}); longest turn {need} "
            "tokens",
            file=sys.stderr,
        )
        runs = [(u, s) for u in args.users for s in args.seeds]
        rng = random.Random(secrets.randbits(64))
        offsets = rng.sample(range(args.vocab_size), min(len(runs), args.vocab_size))
        nonce = secrets.token_hex(4)
        for i, (users, seed) in enumerate(runs):
            settings = RunSettings(
                users, seed, args.duration, str(model["id"]), f"agents-{nonce}-{users}u{seed}s",
                args.conversations, args.warm_prefix, not args.no_hints,
            )  # fmt: skip
            run = AgentsRun(
                workload, client, settings, TokenSpace(args.vocab_size, offsets[i % len(offsets)])
            )
            before = counter_totals(await client.metrics_text())
            progress = ProgressLine(run.progress)
            ticker = asyncio.create_task(progress.run())
            try:
                outcome = await run.run()
            finally:
                ticker.cancel()
                progress.close()
            text = await client.metrics_text()
            after = counter_totals(text)
            meta = {
                "label": args.label, "url": url, "model": settings.model,
                "workload": workload.name, "scale": args.scale,
                "scale_effective": factor,
                "max_human_seconds": args.max_human_seconds,
                "max_tool_seconds": args.max_tool_seconds, "vocab_size": args.vocab_size,
                "token_offset": run.space.offset,
                "server_lamps_metrics": None if text is None else "lamps_" in text,
                "server_counters": {k: after[k] - before.get(k, 0.0) for k in after} or None,
            }  # fmt: skip
            row = run_row(outcome, run, warmup=args.warmup, meta=meta)
            on_row(row, turn_lines(outcome, run, args.label),
                   conversation_lines(outcome, run, args.label))  # fmt: skip
            if outcome.interrupted:
                return True
    return False


def run_agents(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``lamps agents``: runs the sweep; writes results.json, turns.jsonl, conversations.jsonl,
    table.md, knees.md and latency.png into --out (after every run); prints the table."""
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    import aiohttp  # noqa: F401  (missing: the CLI names the extra to install, before any run)

    from lamps.agents.conversations import load_conversations
    from lamps.agents.results import merged_rows, write_jsonl, write_tables
    from lamps.replay.metrics import write_results
    from lamps.replay.provenance import provenance, require_clean

    _check(args)
    prov = provenance()
    require_clean(prov, args.allow_dirty)
    workload, factor = load_conversations(
        args.trace, scale=args.scale, max_human_seconds=args.max_human_seconds,
        max_tool_seconds=args.max_tool_seconds,
    )  # fmt: skip
    out: Path = args.out
    command = "lamps " + " ".join(shlex.quote(a) for a in argv)
    header = {"provenance": prov.as_dict(), "command": command, "slo_ttft_p95": args.slo}
    if args.append:
        header["earlier_commands"] = earlier_commands(out / "results.json")
    banner = prov.banner()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def on_row(row: dict[str, Any], turns: list[Any], convs: list[Any]) -> None:
        append = args.append or bool(rows)
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "turns.jsonl", turns, append=append)
        write_jsonl(out / "conversations.jsonl", convs, append=append)
        everything = merged_rows(out, rows) if args.append else rows
        write_results(
            everything, out, **header, wall_seconds=round(time.perf_counter() - started, 1)
        )
        write_tables(everything, out, banner=banner, slo=args.slo)

    print(f"lamps agents: {workload.name} ({len(workload.requests)} conversations, scale "
          f"{args.scale:g}), users={','.join(map(str, args.users))}, duration={args.duration:g}s, "
          f"seeds={','.join(map(str, args.seeds))}\n{banner}", file=sys.stderr)  # fmt: skip
    try:
        interrupted = asyncio.run(_sweep(args, workload, factor, on_row))
    except KeyboardInterrupt:
        interrupted = True
    if not rows:
        print("lamps agents: interrupted before a run ended; nothing written", file=sys.stderr)
        return 130
    everything = merged_rows(out, rows) if args.append else rows
    print(banner)
    print(write_tables(everything, out, banner=banner, slo=args.slo))
    for row in rows:
        _print_accounting(row)
    if not args.no_plots:
        from lamps.replay.plots import plot_latency

        plot_latency(everything, out / "latency.png", slo=args.slo, banner=banner)
    print(f"wrote {out}/results.json, turns.jsonl, conversations.jsonl, table.md, knees.md"
          + ("" if args.no_plots else ", latency.png"), file=sys.stderr)  # fmt: skip
    if interrupted:
        print("lamps agents: interrupted; the last run's row covers what it had done",
              file=sys.stderr)  # fmt: skip
        return 130
    return 0


def earlier_commands(results: Path) -> list[str]:
    """The commands whose rows an ``--append`` keeps (none when there is no results.json)."""
    if not results.exists():
        return []
    data = json.loads(results.read_text())
    if not isinstance(data, dict):
        return []
    return [*data.get("earlier_commands", []), *([data["command"]] if "command" in data else [])]


def _print_accounting(row: dict[str, Any]) -> None:
    print(
        f"{row['policy']} @ {row['users']} users, seed {row['seed']}: turns "
        f"{row['turns_done']} done, {row['turns_failed']} failed, {row['turns_cut']} cut at the "
        f"end, {row['turns_unsent']} never sent; {row['turns_retried']} retried "
        f"({row['failed_attempts']} failed attempts: {row['errors_by_kind'] or 'none'}); "
        f"conversations {row['conversations_done']} done, {row['conversations_failed']} failed, "
        f"{row['conversations_open']} open"
        + ("" if row["cached_tokens_reported"] else
           "; the server reported NO cached tokens (vLLM: --enable-prompt-tokens-details)")
        + (" [INTERRUPTED]" if row["interrupted"] else ""),
        file=sys.stderr,
    )  # fmt: skip
