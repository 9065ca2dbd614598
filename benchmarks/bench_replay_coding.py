"""Replay speed on the Claude Code traces: N closed-loop users for a window of virtual time.

Target (issue "Real coding agents"): 32 users x 20 virtual minutes of these traces, one
policy (``vllm``), replayed in under 5 minutes of wall time on one core. Each case times one
whole replay (building the engine, vLLM's real scheduler included, and running it); the
summary (``conftest.py``) prints its median as a ratio to the budget, 300 s scaled by
user-minutes for the small case (< 1: within the budget). Traces: the 133 of
``../shared/workloads/claude-code`` beside the checkout when present, else
``builtin:claude-code`` (40 of them). Profiles: Llama-3.1-8B on one H100 at 128k (32 users
overload it: the replay is mostly long prefill steps) and Llama-3.1-70B on 8 H100s (it serves
them: tens of thousands of decode steps, the harder case for the replay's speed).
Run: pytest benchmarks/bench_replay_coding.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "workloads" / "claude-code" / "traces"
BUDGET_SECONDS = 300.0
"""5 minutes of wall time for 32 users x 20 virtual minutes."""
TARGET_USER_MINUTES = 32 * 20
SIZES = {"4users-2min": (4, 2.0), "32users-20min": (32, 20.0)}
SMOKE_SIZE = "4users-2min"


@pytest.mark.parametrize("profile", ["llama31-8b-h100-128k", "llama31-70b-8xh100"])
@pytest.mark.parametrize("size", list(SIZES))
def test_replay_coding_users(benchmark: Any, size: str, profile: str) -> None:
    if benchmark.disabled and size != SMOKE_SIZE:
        pytest.skip("the 20-minute case runs when benchmarking (a smoke pass runs the small one)")
    from lamps.logs import apply_vllm_logs
    from lamps.replay.engine import SimEngine
    from lamps.replay.flows import UserLoop
    from lamps.replay.policies import make_policy
    from lamps.replay.profiles import get_profile
    from lamps.workloads import load_trace

    apply_vllm_logs()
    users, minutes = SIZES[size]
    workload = load_trace(SHARED if SHARED.is_dir() else "builtin:claude-code")
    gpu = get_profile(profile)

    def replay() -> None:
        policy = make_policy("vllm", cost_config=gpu.scheduler_cost_config())
        flow = UserLoop(workload, users, seed=0)
        result = SimEngine(gpu, policy, flow, stop_at=60.0 * minutes).run()
        assert result.virtual_seconds >= 60.0 * minutes
        assert sum(len(r.turns) for r in result.records) > users

    benchmark.group = f"coding traces, {size}"
    benchmark.extra_info["budget_seconds"] = BUDGET_SECONDS * users * minutes / TARGET_USER_MINUTES
    benchmark.extra_info["traces"] = str(SHARED) if SHARED.is_dir() else "builtin:claude-code"
    benchmark.pedantic(replay, rounds=1 if size != SMOKE_SIZE else 3, iterations=1)
