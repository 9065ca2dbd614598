"""Replay speed: N requests of the multi-API trace at 5 requests/s through one policy.

Each policy replays the same arrivals (vLLM's real scheduler, simulated GPT-J/A100 clock) in
the same session, so the rows of a group compare the schedulers' own overhead: `vllm` is
stock vLLM (no sessions), `infercept` the InferCept scheduler, `lamps` the plug-in.
Target (issue 4): 1,000 requests under one policy in at most 60 s.
Run: pytest benchmarks/bench_replay.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

import pytest


def _arrivals(n: int) -> list[Any]:
    from lamps.workloads import load_trace, poisson_arrivals

    arrivals = poisson_arrivals(load_trace("builtin:infercept-multi-api"), 5.0, 2 * n / 5.0, 0)
    assert len(arrivals) >= n
    return arrivals[:n]


@pytest.mark.parametrize("requests", [100, 1000])
@pytest.mark.parametrize("impl", ["vllm", "infercept", "lamps"])
def test_replay(benchmark: Any, impl: str, requests: int) -> None:
    from lamps.replay.engine import SimEngine
    from lamps.replay.policies import make_policy
    from lamps.replay.profiles import get_profile

    profile = get_profile("gptj-6b-a100")
    arrivals = _arrivals(requests)
    engines: list[SimEngine] = []

    def setup() -> None:
        engines.append(
            SimEngine(
                profile, make_policy(impl, cost_config=profile.scheduler_cost_config()), arrivals
            )
        )

    def replay() -> None:
        result = engines[-1].run()
        assert all(r.finished for r in result.records)

    benchmark.group = f"replay {requests} requests"
    benchmark.pedantic(replay, setup=setup, rounds=3, iterations=1)
