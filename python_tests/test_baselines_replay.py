"""Every baseline through a short replay under heavy memory pressure: nothing lost or leaked.

Each policy replays the same arrivals on a GPU with room for ~6,000 tokens of KV, so that
InferCept swaps and discards victims, the authors' LAMPS demotes and evicts, and Continuum
pins and gives pins up. Every request must finish with the trace's token counts, and at the
end no request, block, pin or host copy may be left.
"""

from __future__ import annotations

import pytest

from lamps.replay.engine import SimEngine
from lamps.replay.policies import make_policy
from lamps.replay.profiles import GIB, GpuProfile, get_profile
from lamps.replay.runner import ReplayConfig, arrivals_for
from lamps.workloads import load_trace

GPTJ = get_profile("gptj-6b-a100")
TINY = GpuProfile(
    "gptj-tiny-test",
    "gptj-6b-a100",
    GPTJ.weight_bytes + 400 * 16 * 458_752,
    GPTJ.weight_bytes,
    28,
    16,
    256,
    host_memory_bytes=1 * GIB,
)
BASELINES = ("infercept", "infercept-paper", "lamps-authors", "continuum", "continuum-code")


@pytest.fixture(scope="module")
def arrivals() -> list:
    workload = load_trace("builtin:infercept-multi-api")
    config = ReplayConfig(policies=BASELINES, qps=(4.0,), duration=40.0, noise=0.3, seed=3)
    return arrivals_for(workload, config)[4.0]


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_conserves_requests_tokens_and_memory(arrivals: list, name: str) -> None:
    policy = make_policy(name, noise=0.3, seed=3, cost_model=GPTJ.cost_model)
    engine = SimEngine(TINY, policy, arrivals)
    result = engine.run()
    for rec in result.records:
        assert rec.finished, rec.arrival.request_id
        assert rec.output_tokens == rec.arrival.request.output_tokens
    sched = engine.scheduler
    assert not sched.requests
    assert sched.kv_pauses.num_pinned_blocks == 0
    assert sched.kv_cache_manager.usage == 0.0
    connector = sched.connector
    if connector is not None:
        assert not connector.scheduler_side.records
        assert connector.num_free_host_blocks == connector.num_host_blocks
    stats = result.policy_stats
    if name.startswith("infercept"):
        assert stats["pauses"] > 50 and stats["discarded"] > 0
        assert stats["paused_swaps"] + stats["running_swaps"] > 0  # memory ran short
    elif name == "lamps-authors":
        assert stats["demoted_discard"] > 0 and stats["victim_discards"] > 0
    else:
        assert stats["pins"] > 0 and stats["turns"] > 50
