"""The multi-engine replay: N real vLLM schedulers behind a router on one virtual clock.

Router rules are checked against real schedulers (vLLM's, LAMPS'), the cluster against tiny
coding traces: nothing lost, sessions kept on their engine, one engine identical to the
single-engine replay. Only the GPU is simulated (the replay's engine model).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from coding_traces import extending, trace, write
from test_sessions import build, turn
from vllm.v1.core.sched.scheduler import Scheduler

from lamps.harness import make_request, run_step
from lamps.replay.cluster import SimCluster
from lamps.replay.engine import SimEngine
from lamps.replay.flows import ConversationFlow, UserLoop
from lamps.replay.metrics import SteadyWindow, summarize
from lamps.replay.policies import make_policy
from lamps.replay.profiles import GpuProfile, get_profile
from lamps.replay.program_routers import LampsAware, ThunderAgentPlacement, kept_kv
from lamps.replay.routers import LeastLoaded, RoundRobin, SessionAffine, make_router
from lamps.replay.runner import ReplayConfig, arrivals_for, run_all
from lamps.workloads import Arrival, Workload, load_trace
from lamps.workloads.coding import parse_coding_trace

LLAMA = get_profile("llama31-8b-h100-128k")
COST = LLAMA.scheduler_cost_config()
# Llama-3.1-8B with room for 12,000 tokens of KV per engine: the traces below contend for it.
SMALL = GpuProfile(
    "llama-small-test",
    "llama31-8b-h100",
    LLAMA.weight_bytes + 4_000 * LLAMA.kv_bytes_per_token,
    LLAMA.weight_bytes,
    32,
    8,
    128,
    max_num_batched_tokens=2048,
    hardware=LLAMA.hardware,
    parameters=LLAMA.parameters,
    max_model_len=8192,
)
ALL_ROUTERS = ("round-robin", "least-loaded", "session-affine", "thunderagent", "lamps-aware")


@dataclass
class Engine:
    """An engine as a router sees it (a real scheduler and its KV capacity)."""

    index: int
    scheduler: Any
    capacity_tokens: int = 10_000


def _plain(make: Any, n: int, num_blocks: int = 64) -> list[Engine]:
    return [Engine(i, make(Scheduler, num_blocks=num_blocks, max_num_seqs=8)) for i in range(n)]


# -- router rules ---------------------------------------------------------------------------


def test_round_robin_cycles_whatever_the_session(make_vllm_scheduler: Any) -> None:
    router = RoundRobin()
    router.bind(_plain(make_vllm_scheduler, 3), "stateless")
    placed = [router.place(s, 100, 0.0) for s in ("a", "a", "b", "a", "c")]
    assert placed == [0, 1, 2, 0, 1]


def test_least_loaded_scores_as_vllms_balancer(make_vllm_scheduler: Any) -> None:
    # Engine 0: one long request running and two waiting on a nearly full KV cache; engine 1:
    # five short requests running. By request count engine 0 is lighter (3 < 5), but waiting
    # requests on a KV-bound engine are penalised: 3 + 2 * 6 * (usage - 0.5) > 5.
    full, busy = _plain(make_vllm_scheduler, 2, num_blocks=64)
    full.scheduler.add_request(make_request("long", list(range(1, 900)), max_tokens=50))
    for _ in range(3):
        run_step(full.scheduler)
    for i in range(2):
        full.scheduler.add_request(make_request(f"w{i}", list(range(2000, 2300)), max_tokens=5))
    for i in range(5):
        busy.scheduler.add_request(make_request(f"b{i}", [i + 1] * 20, max_tokens=50))
    run_step(full.scheduler)
    run_step(busy.scheduler)
    assert full.scheduler.get_request_counts() == (1, 2)
    assert busy.scheduler.get_request_counts() == (5, 0)
    usage = full.scheduler.get_kv_cache_usage()
    assert usage > 0.75
    router = LeastLoaded()
    router.bind([full, busy], "stateless")
    assert router.place("s1", 10, 0.0) == 1
    assert router.score(0) == pytest.approx(3 + 2 * 6 * (usage - 0.5))
    # Until the next snapshot the chosen engine counts the placed request as waiting: 5 + 1,
    # plus the in-flight floor; still below engine 0's score, so it goes there again.
    assert router.score(1) == pytest.approx(
        6 + 6 * 1 * max(0.0, busy.scheduler.get_kv_cache_usage() - 0.5)
    )
    assert router.place("s2", 10, 0.05) == 1
    # Without waiting requests the penalty is off: engine 0 scores its one running request,
    # below engine 1's five (seen in the next snapshot, the coordinator's 100 ms later).
    for rid in ("w0", "w1"):
        full.scheduler.finish_requests(rid, _aborted())
    assert router.place("s3", 10, 0.2) == 0


def _aborted() -> Any:
    from vllm.v1.request import RequestStatus

    return RequestStatus.FINISHED_ABORTED


def test_session_affine_sticks_balances_and_expires(make_vllm_scheduler: Any) -> None:
    router = SessionAffine(expiration=100.0)
    router.bind(_plain(make_vllm_scheduler, 3), "stateless")
    first = [router.place(f"s{i}", 10, 0.0) for i in range(3)]
    assert sorted(first) == [0, 1, 2]  # each new session where fewest are active
    assert [router.place(f"s{i}", 10, 1.0) for i in range(3)] == first  # sticky
    router.ended("s1", 2.0)
    assert router.place("s3", 10, 2.0) == first[1]  # the engine with one session fewer
    fourth = router.place("s4", 10, 3.0)  # all at one: the rendezvous hash decides
    assert router.place("s4", 10, 4.0) == fourth
    # s0 and s2 go idle past the expiration; the sweep (at most every 60 s) frees their engines.
    router.place("s3", 10, 90.0)
    router.place("s4", 10, 90.0)
    assert router.place("s5", 10, 160.0) not in (first[1], fourth)
    assert router.stats() == {"sessions_expired": 2}


def test_thunderagent_places_new_programs_by_active_tokens_within_capacity(
    make_vllm_scheduler: Any,
) -> None:
    engines = _plain(make_vllm_scheduler, 2)
    engines[1].capacity_tokens = 4_000
    router = ThunderAgentPlacement()
    router.bind(engines, "stateless")
    assert router.place("a", 3_000, 0.0) == 0  # ties: the first backend
    router.sent("a", 0, 3_000, 0.0)
    assert router.place("b", 1_000, 0.0) == 1  # fewest active tokens, 1,000 + 100 fits 4,000
    router.sent("b", 1, 1_000, 0.0)
    # c (3,500 tokens) fits only engine 0 (10,000 - 3,000 - 100 left): not the lighter engine 1.
    assert router.place("c", 3_500, 0.0) == 0
    router.answered("b", 1, 1_200, 1.0)  # acting programs still count (weight 1)
    assert router.backends[1].active_tokens == 1_200
    assert router.place("a", 3_100, 2.0) == 0  # a program stays on its backend
    router.ended("a", 3.0)
    router.ended("c", 3.0)
    assert router.backends[0].active_tokens == 0
    assert router.place("d", 20_000, 4.0) == 0  # no room anywhere: the most room, at once
    assert router.stats()["placed_over_capacity"] == 1


def test_lamps_aware_places_new_sessions_by_memory_over_time(make_vllm_scheduler: Any) -> None:
    engines = [Engine(i, build(make_vllm_scheduler)[0]) for i in range(2)]
    router = LampsAware()
    router.bind(engines, "stateless")
    busy = engines[0].scheduler
    busy.add_request(make_request("r", list(range(1, 300)), max_tokens=30, extra_args=_hints()))
    run_step(busy)
    assert router.load(0) > 0 == router.load(1)
    assert router.place("new", 100, 0.0) == 1
    assert router.place("other", 100, 0.0) == 1  # memory over time still lower there


def test_lamps_aware_moves_a_session_only_once_its_kv_is_gone(make_vllm_scheduler: Any) -> None:
    engines = [Engine(i, build(make_vllm_scheduler)[0]) for i in range(2)]
    router = LampsAware()
    router.bind(engines, "stateless")
    assert router.place("s", 200, 0.0) == 0  # all idle: fewest sessions, lowest index
    sched = engines[0].scheduler
    # Its turn runs on engine 0 and parks in the prefix cache (a gap too long to pin).
    turn(sched, "t1", list(range(1, 200)), sid="s", predicted_api_seconds=1e5)
    kept = kept_kv(sched, "s")
    assert kept is not None and len(kept) == 12
    assert router.place("s", 300, 1.0) == 0
    assert router.place("x", 100, 1.0) == 1  # balances new sessions meanwhile
    # Other traffic evicts the parked turn's blocks: engine 0 holds nothing of s any more.
    for i in range(4):
        rid = f"churn{i}"
        tokens = list(range(5000 + 300 * i, 5300 + 300 * i))
        sched.add_request(make_request(rid, tokens, max_tokens=2))
        while rid in sched.requests:
            run_step(sched)
    assert sched.lamps_sessions.session("s").parked.intact() == 0
    assert kept_kv(sched, "s") == []
    moved = router.place("s", 300, 2.0)
    assert router.stats() == {"sessions_replaced": 1}
    assert router.place("s", 300, 2.5) == moved  # sticky again on its new engine


def test_lamps_aware_moves_a_session_whose_kept_prefix_every_engine_has(
    make_vllm_scheduler: Any,
) -> None:
    engines = [Engine(i, build(make_vllm_scheduler)[0]) for i in range(2)]
    router = LampsAware()
    router.bind(engines, "stateless")
    assert router.place("s", 200, 0.0) == 0
    prompt = list(range(1, 200))
    turn(engines[0].scheduler, "t1", prompt, sid="s", predicted_api_seconds=1e5)
    assert router.place("s", 300, 1.0) == 0  # engine 0 holds its 12 blocks, engine 1 none
    # Engine 1 serves another session with the same 199-token prefix (a shared system prompt,
    # as long as the whole turn here): engine 0 keeps nothing of s that engine 1 lacks.
    engines[1].scheduler.add_request(make_request("y", [*prompt, 9, 9], max_tokens=4))
    while "y" in engines[1].scheduler.requests:
        run_step(engines[1].scheduler)
    assert len(kept_kv(engines[0].scheduler, "s") or []) == 12
    router.place("s", 300, 2.0)
    assert router.stats() == {"sessions_replaced": 1}
    engines[0].scheduler.lamps_sessions.end("s")
    assert kept_kv(engines[0].scheduler, "s") == []


def test_lamps_aware_needs_lamps_engines(make_vllm_scheduler: Any) -> None:
    with pytest.raises(ValueError, match=r"engines \[0, 1\] run no LAMPS scheduler"):
        LampsAware().bind(_plain(make_vllm_scheduler, 2), "stateless")
    with pytest.raises(ValueError, match="policies vllm run no LAMPS scheduler"):
        ReplayConfig(policies=("vllm",), engines=2, router="lamps-aware")
    with pytest.raises(ValueError, match="2 engines need a router"):
        ReplayConfig(policies=("vllm",), engines=2)
    with pytest.raises(ValueError, match="unknown router 'random'"):
        ReplayConfig(policies=("vllm",), engines=2, router="random")
    with pytest.raises(ValueError, match="engines: must be an integer >= 1"):
        ReplayConfig(policies=("vllm",), engines=0, router="round-robin")


def _hints() -> dict[str, Any]:
    return {"lamps": {"predicted_output_tokens": 30, "predicted_api_seconds": 5.0}}


# -- the cluster ----------------------------------------------------------------------------


def _conversations() -> list[Arrival]:
    """Ten traced conversations of four turns (to 2,500 tokens of context), tool calls of 1 to
    25 s: more than two engines' 4,000 tokens of KV each hold at once."""
    arrivals = []
    for i in range(10):
        turns = extending(4, first=300 + 150 * i, grow=200)
        for t in turns:
            t["think_time"] = 1.0 + 6.0 * (i % 5)
        conv = parse_coding_trace(trace(turns, f"c{i}"), f"c{i}")
        arrivals.append(Arrival(i, 0.5 * i, conv))
    return arrivals


def _cluster(router: str, policy: str, engines: int = 2) -> SimCluster:
    policies = [make_policy(policy, cost_config=COST) for _ in range(engines)]
    return SimCluster(SMALL, policies, make_router(router), ConversationFlow(_conversations()))


def _cases() -> list[tuple[str, str]]:
    # Session mode: lamps and infercept (vllm-preserve deadlocks on this small KV, as on one
    # engine: paused sessions hold it all).
    policies = ("vllm", "lamps-stateless", "lamps", "infercept")
    cases = [(r, p) for r in ALL_ROUTERS for p in policies if r != "lamps-aware" or "lamps" in p]
    # ThunderAgent whole: its placement here, its admission on every engine (its policy).
    return [*cases, ("thunderagent", "thunderagent"), ("session-affine", "vllm-offload")]


@pytest.mark.parametrize(("router", "policy"), _cases())
def test_two_engines_lose_nothing_and_keep_sessions(router: str, policy: str) -> None:
    cluster = _cluster(router, policy)
    result = cluster.run()
    assert len(result.records) == 10 and not cluster.unfinished
    for rec in result.records:
        conv = rec.arrival.request
        assert rec.finished, rec.arrival.request_id
        assert rec.output_tokens == sum(t.output_tokens for t in conv.turns)
        assert len(rec.turns) == len(cluster.placements[rec.arrival.index]) == 4
        assert all(t.finish is not None for t in rec.turns)
    for engine in cluster.engines:
        assert engine.turns > 0  # both engines served
        assert not engine.scheduler.requests  # every request ended
        assert engine.scheduler.kv_cache_manager.usage == 0.0  # nothing pinned or leaked
    assert sum(e.turns for e in cluster.engines) == 40
    spread = [len(set(p)) for p in cluster.placements.values()]
    row = cluster.cluster_row()
    sticky = router in ("session-affine", "thunderagent", "lamps-aware")
    if cluster.api_mode == "session" or sticky:
        # Every turn on its conversation's engine, unless re-placed (possibly onto the same).
        replaced = row["router_stats"].get("sessions_replaced", 0)
        assert row["moved_turns"] <= replaced
        assert sum(n - 1 for n in spread) <= replaced
    else:
        assert max(spread) == 2  # no affinity: a conversation's turns land on both engines
        assert row["moved_turns"] > 0 and row["moved_turns_prefill_tokens"] > 0


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    """A row without wall-clock fields (NaN made comparable)."""
    out = {k: v for k, v in row.items() if k != "wall_seconds"}
    out["policy_stats"] = {k: v for k, v in row["policy_stats"].items() if k != "ranking_seconds"}
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


@pytest.mark.parametrize(
    ("policy", "router"),
    [("vllm", "least-loaded"), ("infercept", "round-robin"), ("lamps-stateless", "lamps-aware")],
)
def test_one_engine_gives_the_single_engine_results(policy: str, router: str) -> None:
    workload = load_trace("builtin:infercept-multi-api")
    config = ReplayConfig(policies=(policy,), qps=(3.0,), duration=30.0, seed=2)
    arrivals = arrivals_for(workload, config)[3.0]
    window = SteadyWindow.for_duration(30.0)
    profile = get_profile(config.profile)
    rows = []
    for cluster in (False, True):
        made = make_policy(policy, cost_config=profile.scheduler_cost_config())
        args: dict[str, Any] = {"window_end": window.end, "stop_at": 60.0, "kv_bin_seconds": 1.0}
        engine = (
            SimCluster(profile, [made], make_router(router), arrivals, **args)
            if cluster
            else SimEngine(profile, made, arrivals, **args)
        )
        rows.append(_strip(summarize(engine.run(), 3.0, kv_bytes_per_token=1.0, window=window)))
    assert rows[0] == rows[1]


def _tiny_workload(tmp_path: Path) -> Workload:
    traces = {
        f"t{i}.json": trace(extending(3 + i % 3, first=400 + 200 * i, grow=300), f"t{i}")
        for i in range(5)
    }
    return load_trace(write(tmp_path, traces))


def test_one_engine_closed_loop_matches_and_two_engines_replay_the_coding_trace(
    tmp_path: Path,
) -> None:
    workload = _tiny_workload(tmp_path)
    base: dict[str, Any] = {"qps": (), "users": (3,), "duration": 60.0, "seed": 4}
    base["profile"] = "llama31-8b-h100-128k"
    single = run_all(workload, ReplayConfig(policies=("lamps-stateless",), **base))
    one = run_all(
        workload,
        ReplayConfig(policies=("lamps-stateless",), engines=1, router="session-affine", **base),
    )
    cluster_keys = {"engines", "router", "router_stats", "moved_turns", "per_engine"}
    cluster_keys.add("moved_turns_prefill_tokens")
    assert {k: v for k, v in _strip(single[0]).items() if k not in cluster_keys} == {
        k: v for k, v in _strip(one[0]).items() if k not in cluster_keys
    }
    assert (single[0]["engines"], single[0]["router"]) == (1, None)
    rows = run_all(
        workload,
        ReplayConfig(
            policies=("lamps-stateless", "vllm"), engines=2, router="session-affine", **base
        ),
    )
    for row in rows:
        assert (row["engines"], row["router"]) == (2, "session-affine")
        assert len(row["per_engine"]) == 2 and all(e["turns"] > 0 for e in row["per_engine"])
        assert row["moved_turns"] == 0
        assert row["turns"] > 0 and math.isfinite(row["ttft_mean"])
        assert row["prefix_hit_rate"] > 0.5  # later turns find their prefix on their engine


def test_users_flow_through_a_cluster_starts_next_traces(tmp_path: Path) -> None:
    workload = _tiny_workload(tmp_path)
    flow = UserLoop(workload, users=4, seed=1)
    policies = [make_policy("lamps-stateless", cost_config=COST) for _ in range(3)]
    cluster = SimCluster(LLAMA, policies, make_router("lamps-aware"), flow, stop_at=90.0)
    result = cluster.run()
    assert len(flow.started) > 4  # users went on to their next conversations
    assert {a.index for a in flow.started} <= {r.arrival.index for r in result.records}
    assert result.stopped_at == pytest.approx(max(90.0, max(e.now for e in cluster.engines)))
    assert sum(1 for e in cluster.engines if e.turns) >= 2


def test_cli_engines_and_router(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lamps.cli import main

    traces = write(tmp_path / "traces", {"a.json": trace(extending(3), "a")})
    out = tmp_path / "out"
    argv = ["replay", "--trace", str(traces), "--users", "2", "--duration", "30", "--seeds", "0"]
    argv += ["--profile", "llama31-8b-h100-128k", "--jobs", "1", "--no-plots", "--allow-dirty"]
    argv += ["--policies", "lamps-stateless", "--out", str(out)]
    with pytest.raises(SystemExit):
        main([*argv, "--engines", "2"])
    assert "2 engines need a router policy" in capsys.readouterr().err
    assert main([*argv, "--engines", "2", "--router", "lamps-aware"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert (data["config"]["engines"], data["config"]["router"]) == (2, "lamps-aware")
    (row,) = data["rows"]
    assert (row["engines"], row["router"], len(row["per_engine"])) == (2, "lamps-aware", 2)
