"""The main command's verdict lines (lamps.replay.verdicts) on rows written here."""

from __future__ import annotations

from typing import Any

from lamps.replay.report import format_markdown
from lamps.replay.verdicts import common_load, format_verdicts


def row(policy: str, qps: float, seed: int, e2e: float, p99: float = 1.0) -> dict[str, Any]:
    return {"policy": policy, "qps": qps, "seed": seed, "users": None,
            "steady_e2e_mean": e2e, "steady_ttft_p99": p99}  # fmt: skip


def skipped(policy: str, qps: float, seed: int) -> dict[str, Any]:
    return {"policy": policy, "qps": qps, "seed": seed, "users": None, "skipped": True}


def test_verdict_is_at_the_highest_load_every_policy_ran() -> None:
    rows = [row(p, q, s, e2e=10.0 * (0.5 if p == "lamps" else 1.0) + s * 0.01)
            for p in ("vllm", "lamps", "infercept") for q in (1, 2) for s in range(3)]  # fmt: skip
    rows += [row("lamps", 3, s, 5.0) for s in range(3)] + [skipped("vllm", 3, s) for s in range(3)]
    rows += [row("infercept", 3, s, 5.0) for s in range(3)]
    assert common_load(rows, "qps") == 2
    text = format_verdicts(rows)
    assert text.startswith("verdict at 2 req/s")
    lamps = next(line for line in text.splitlines() if line.strip().startswith("lamps"))
    infercept = next(line for line in text.splitlines() if "infercept" in line)
    assert "mean e2e 0.50" in lamps and "lower (better)" in lamps
    assert "mean e2e 1.00" in infercept and "no difference shown" in infercept
    assert "vllm " not in text.split("\n", 1)[1]  # the reference has no line of its own


def test_worse_and_one_seed_and_no_common_load() -> None:
    worse = [row(p, 1, s, e2e=(2.0 if p == "lamps" else 1.0) + s * 0.01)
             for p in ("vllm", "lamps") for s in range(2)]  # fmt: skip
    assert "higher (worse)" in format_verdicts(worse)
    one = [row(p, 1, 0, 1.0) for p in ("vllm", "lamps")]
    assert "one seed: no interval, no verdict" in format_verdicts(one)
    apart = [row("vllm", 1, 0, 1.0), row("lamps", 2, 0, 1.0)]
    assert format_verdicts(apart) == "verdict: no load at which every policy ran every seed"


def test_closed_loop_rows_are_judged_on_per_turn_p95_ttft() -> None:
    rows = [{"policy": p, "users": 8, "qps": None, "seed": s,
             "ttft_p95": 4.0 if p == "vllm" else 1.0, "ttft_mean": 1.0}
            for p in ("vllm", "lamps-stateless") for s in range(3)]  # fmt: skip
    text = format_verdicts(rows)
    assert text.startswith("verdict at 8 users") and "per-turn p95 TTFT 0.25" in text


def test_tables_show_the_engine_settings_each_line_ran_with() -> None:
    rows = [{**row(p, 1, s, 1.0), "token_budget": 384 if p == "paper" else 2048,
             "max_num_seqs": 256, "prefix_caching": p != "paper"}
            for p in ("vllm", "paper") for s in range(2)]  # fmt: skip
    rows.append(row("unknown", 1, 0, 1.0))  # a real server's row: settings not recorded
    table = format_markdown(rows, ["steady_e2e_mean"])
    assert "| 1 | vllm | 2 | 2048/256/on |" in table
    assert "| 1 | paper | 2 | 384/256/off |" in table
    assert "| 1 | unknown | 1 | - |" in table
