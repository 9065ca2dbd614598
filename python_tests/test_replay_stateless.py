"""The stateless-API replay of agents: the lamps-stateless policy and the per-turn figures."""

from __future__ import annotations

from typing import Any

from lamps.replay.engine import SimEngine
from lamps.replay.policies import make_policy
from lamps.replay.profiles import get_profile
from lamps.replay.records import RequestRecord
from lamps.replay.stateless_eval import recovered_tokens, table, turn_latencies
from lamps.workloads import Arrival, TraceSegment, WorkloadRequest, load_trace


def test_turn_latencies_and_recovered_tokens_from_a_record() -> None:
    req = WorkloadRequest("r", 100, (TraceSegment(10, 2.0, 5, True), TraceSegment(4)), "bfcl")
    rec = RequestRecord(Arrival(0, 1.0, req))
    rec.api_calls = [(3.0, 5.0)]
    rec.finish_time = 6.5
    assert turn_latencies(rec) == [2.0, 1.5]
    # Turns from scratch: (100 + 10 - 1) + (115 + 4 - 1) = 227 tokens; 130 were scheduled.
    rec.scheduled_tokens = 130
    assert recovered_tokens(rec) == 97
    assert turn_latencies(RequestRecord(Arrival(1, 0.0, req))) == []  # unfinished


def _run(policy: str, programs: int = 4) -> tuple[Any, list[Arrival]]:
    wl = load_trace("builtin:agent")
    arrivals = [Arrival(i, 0.5 * i, wl.requests[i]) for i in range(programs)]
    engine = SimEngine(get_profile("llama31-8b-h100"), make_policy(policy), arrivals)
    return engine, arrivals


def test_lamps_stateless_parks_every_turn_and_ends_every_session() -> None:
    engine, arrivals = _run("lamps-stateless")
    assert engine.policy.api_mode == "stateless"
    result = engine.run()
    assert all(r.finished for r in result.records)
    turns = sum(len(a.request.segments) for a in arrivals)
    stats = engine.scheduler.lamps_stats
    assert stats.session_turns == turns
    assert stats.takeovers == turns - len(arrivals)  # every turn but the last was taken over
    assert stats.recovered_tokens == stats.parked_tokens > 0
    assert stats.sessions_ended == len(arrivals)  # the last turns said session_end
    assert engine.scheduler.lamps_sessions.num_sessions == 0
    assert engine.scheduler.kv_pauses.num_pinned_blocks == 0
    vllm_engine, _ = _run("vllm")
    vllm = vllm_engine.run()
    lamps_recovered = sum(recovered_tokens(r) for r in result.records)
    assert lamps_recovered >= sum(recovered_tokens(r) for r in vllm.records)


def test_table_has_intervals_over_seeds() -> None:
    rows = [{"qps": 1.0, "policy": "vllm", "turn_mean": v, "turn_p99": v, "program_mean": v,
             "program_p99": v, "ttft_mean": v, "ttft_p99": v, "recovered_per_turn": v,
             "finished_fraction": 1.0} for v in (1.0, 2.0, 3.0)]  # fmt: skip
    text = table(rows)
    assert ("| 1 | vllm | 3 |" in text and "±" in text) or "[" in text


def test_continuum_runs_in_the_stateless_replay_with_the_profiles_cost_model() -> None:
    # The replay hands every policy the profile's cost model; Continuum refused it.
    wl = load_trace("builtin:agent")
    arrivals = [Arrival(0, 0.0, wl.requests[0])]
    profile = get_profile("llama31-8b-h100")
    policy = make_policy("continuum", cost_config=profile.scheduler_cost_config())
    assert policy.api_mode == "stateless"
    result = SimEngine(profile, policy, arrivals).run()
    assert result.records[0].finished
