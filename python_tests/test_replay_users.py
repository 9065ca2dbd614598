"""Traced conversations in the replay: vLLM's real scheduler (the GPU's clock simulated) sees
the traced prefix sharing, sub-agents run beside their parent, closed-loop users, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from coding_traces import extending, ids, request, subagent, trace, write

from lamps.harness import block_hasher, make_request
from lamps.replay.engine import SimEngine
from lamps.replay.flows import ConversationFlow, UserLoop
from lamps.replay.policies import make_policy
from lamps.replay.profiles import get_profile
from lamps.replay.records import RequestRecord, TurnRecord
from lamps.replay.report import format_knees, format_table, knees
from lamps.replay.runner import ReplayConfig, run_all
from lamps.replay.tokens import SeededHasher
from lamps.replay.turn_metrics import turn_metrics
from lamps.workloads import Arrival, Workload, load_trace
from lamps.workloads.coding import TracedConversation, parse_coding_trace

PROFILE = get_profile("llama31-8b-h100-128k")
COST = PROFILE.scheduler_cost_config()


def _conv(requests: list[dict], name: str = "c") -> TracedConversation:
    return parse_coding_trace(trace(requests, name), name)


def _engine(policy: str, flow: ConversationFlow | list[Arrival], **kw: object) -> SimEngine:
    return SimEngine(PROFILE, make_policy(policy, cost_config=COST), flow, **kw)  # type: ignore[arg-type]


# A conversation that extends, then compacts (keeps 2 of its blocks), then extends again.
COMPACTING = [
    request(400, 30, ids((1, 6))),
    request(700, 40, ids((1, 10))),
    request(500, 20, [1, 2, 70, 71, 72, 73, 74]),
    request(900, 10, [1, 2, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81], stop="end_turn"),
]


def _cached_expected(prev_in: int, prev_out: int, now_in: int, shared: int | None = None) -> int:
    """vLLM's prefix hit: full 16-token blocks of what the previous request computed (its input
    and answer, less the last sampled token) or of the traced shared prefix, never the last
    input token."""
    reach = prev_in + prev_out - 1 if shared is None else shared
    return min(reach, now_in - 1) // 16 * 16


def test_next_turn_hits_the_prefix_cache_through_the_previous_answer() -> None:
    conv = _conv(COMPACTING)
    result = _engine("vllm", [Arrival(0, 0.0, conv)]).run()
    (rec,) = result.records
    turns = rec.turns
    assert [t.input_tokens for t in turns] == [400, 700, 500, 900]
    assert all(t.finish is not None for t in turns)
    assert turns[0].cached == 0
    assert turns[1].cached == _cached_expected(400, 30, 700)  # through the answer
    assert turns[2].cached == _cached_expected(700, 40, 500, shared=2 * 64)  # the compaction
    assert turns[3].cached == _cached_expected(500, 20, 900)
    for t in turns:
        assert t.computed == t.input_tokens - t.cached  # what was not cached was computed


def test_both_api_modes_replay_every_turn_and_session_mode_reopens_on_compaction() -> None:
    conv = _conv(COMPACTING)
    stateless = _engine("vllm", [Arrival(0, 0.0, conv)])
    session = _engine("vllm-preserve", [Arrival(0, 0.0, conv)])
    ids_seen: list[str] = []
    add = session.scheduler.add_request
    session.scheduler.add_request = lambda r: (ids_seen.append(r.request_id), add(r))[1]  # type: ignore[method-assign]
    for engine in (stateless, session):
        (rec,) = engine.run().records
        assert rec.finished and rec.output_tokens == sum(t.output_tokens for t in conv.turns)
        assert not engine.scheduler.requests  # every request and session ended
    # One session until the compaction (turn 2), then a new one: closed, reopened, resumed.
    assert ids_seen == ["r0", "r0", "r0", "r0~2", "r0~2", "r0~2"]
    (srec,) = session.records
    # A resumed turn computes only its new tokens (and the dropped last sampled one).
    assert srec.turns[1].computed == 700 - (400 + 30) + 1
    assert srec.turns[2].cached == _cached_expected(700, 40, 500, shared=2 * 64)


def test_subagents_run_concurrently_while_their_parent_waits() -> None:
    subs = [
        subagent([request(300, 50, ids((40, 4))), request(500, 50, ids((40, 7)))], "a1"),
        subagent([request(300, 80, ids((40, 4)))], "a2"),
    ]
    conv = _conv([request(200, 10, think=0.0), *subs, request(600, 10, think=0.5)], "p")
    engine = _engine("vllm", ConversationFlow([Arrival(0, 0.0, conv)]))
    result = engine.run()
    parent, a1, a2 = sorted(result.records, key=lambda r: r.arrival.index)
    assert [r.arrival.request.request_id for r in (a1, a2)] == ["p/a1", "p/a2"]
    answered = parent.turns[0].finish
    assert a1.arrival.time == a2.arrival.time == answered  # together, once the parent answered
    assert a1.turns[0].first_token < a2.turns[0].finish  # concurrent
    both_done = max(a1.finish_time, a2.finish_time)
    assert parent.turns[1].sent == max(both_done, answered + 0.5)
    # The sub-agents share their trace's ids with each other: a2 finds a1's prefix cached.
    assert a2.turns[0].cached + a1.turns[0].cached >= 4 * 64 - 16


def _tiny_workload(tmp_path: Path) -> Workload:
    traces = {
        f"t{i}.json": trace(extending(2 + i, first=200 + 64 * i, grow=100), f"t{i}")
        for i in range(3)
    }
    return load_trace(write(tmp_path, traces))


def test_closed_loop_users_start_the_next_trace_when_one_ends(tmp_path: Path) -> None:
    workload = _tiny_workload(tmp_path)
    flow = UserLoop(workload, users=2, seed=3)
    result = _engine("vllm", flow, stop_at=60.0).run()
    started = flow.started
    assert len(started) > 6  # the users went through several conversations
    assert [a.time for a in started[:2]] == [0.0, 0.0]
    # Each finished conversation is followed, at that very moment, by its user's next one;
    # only the two conversations in flight at the stop are unfinished.
    finished = sorted(r.finish_time for r in result.records if r.finished)
    assert finished == [a.time for a in started[2:]]
    assert sum(not r.finished for r in result.records) == 2
    assert len(result.records) == len(started)
    # The traces are taken in a seeded order, a fresh permutation each time round.
    names = [a.request.request_id for a in started]
    assert sorted(names[:3]) == sorted(names[3:6]) == ["t0", "t1", "t2"]
    again = UserLoop(workload, users=2, seed=3)
    _engine("vllm-preserve", again, stop_at=60.0).run()
    n = min(len(again.started), len(started))
    assert [a.request.request_id for a in again.started[:n]] == names[:n]
    other = [UserLoop(workload, users=2, seed=s)._next_trace().request_id for s in range(8)]
    assert len(set(other)) > 1


def test_users_rows_carry_per_turn_metrics_and_the_knee(tmp_path: Path) -> None:
    workload = _tiny_workload(tmp_path)
    config = ReplayConfig(
        policies=("vllm",),
        qps=(),
        users=(1, 2),
        duration=40.0,
        profile="llama31-8b-h100-128k",
        seeds=(0, 1),
    )
    rows = run_all(workload, config)
    assert {(r["users"], r["seed"]) for r in rows} == {(1, 0), (2, 0), (1, 1), (2, 1)}
    for r in rows:
        assert r["qps"] is None and r["turns"] >= r["turns_served"] > 0
        assert 0 <= r["ttft_p50"] <= r["ttft_p95"] <= r["ttft_p99"] < 2.0
        assert r["turn_latency_p95"] >= r["turn_latency_mean"] > r["ttft_mean"]
        assert 0 < r["prefix_hit_rate"] < 1 and r["kv_loaded_tokens"] == 0
        assert r["prefill_tokens_per_turn"] < r["input_tokens_per_turn"]
        assert r["swap_gb"] == 0 and r["window_start"] == 4.0 and r["window_end"] == 40.0
    k = knees(rows)["vllm"]
    assert k["knee"] == 2 and k["censored"]
    assert "knee (users, mean curve)" in format_knees(rows)
    assert "p95 TTFT s" in format_table(rows)


def test_window_metrics_count_unserved_turns_as_late() -> None:
    conv = _conv(extending(3))
    rec = RequestRecord(Arrival(0, 5.0, conv), finish_time=50.0)
    rec.turns = [
        TurnRecord(0, 5.0, 200, first_token=6.0, finish=8.0, computed=200, cached=0),
        TurnRecord(1, 10.0, 370, first_token=10.5, finish=12.0, computed=50, cached=320),
        TurnRecord(2, 20.0, 540, first_token=None, computed=0),  # no first token by the end
        TurnRecord(3, 99.0, 700),  # sent after the window
    ]
    m = turn_metrics([rec], start=0.0, end=30.0, top_level={0}, swapped_bytes=2e9)
    assert (m["turns"], m["turns_served"]) == (3, 2)
    assert m["ttft_mean"] == math.inf and m["ttft_p99"] == math.inf
    assert m["ttft_p50"] == 1.0  # of 0.5, 1 and never: with a never, the next sample up
    assert m["turn_latency_mean"] == pytest.approx((3.0 + 2.0 + 10.0) / 3)  # censored at 30
    assert m["prefill_tokens_per_turn"] == 125 and m["input_tokens_per_turn"] == 285
    assert m["prefix_hit_rate"] == pytest.approx(320 / 570)
    assert m["conversations_finished"] == 0 and m["swap_gb"] == 2.0


def test_poisson_arrivals_of_traced_conversations_keep_the_rate_metrics(tmp_path: Path) -> None:
    workload = _tiny_workload(tmp_path)
    config = ReplayConfig(policies=("vllm", "lamps"), qps=(0.5,), duration=20.0)
    rows = run_all(workload, config)
    for r in rows:
        assert "users" not in r and r["steady_requests"] > 0 and r["unfinished"] == 0


def test_seeded_hashes_equal_vllm_hashing_everything() -> None:
    plain = block_hasher(16)
    seeded = SeededHasher(plain)
    previous = make_request("p", list(range(700)), hasher=plain)
    prompt = [*range(700), *range(5000, 5300)]
    seeded.seed("q", previous.block_hashes[:40])
    again = make_request("q", prompt, hasher=seeded)
    assert again.block_hashes == make_request("x", prompt, hasher=plain).block_hashes
    # The seed is what the first blocks get: a wrong one would show.
    seeded.seed("w", make_request("o", list(range(1, 701)), hasher=plain).block_hashes[:40])
    wrong = make_request("w", prompt, hasher=seeded)
    assert wrong.block_hashes[0] != again.block_hashes[0]


def test_users_need_traced_conversations() -> None:
    with pytest.raises(ValueError, match="--users replays traced conversations"):
        UserLoop(load_trace("builtin:infercept-multi-api"), users=2)
    with pytest.raises(ValueError, match="exactly one of the two"):
        ReplayConfig(users=(2,))


def test_cli_users_sweep_writes_the_knee(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lamps.cli import main

    traces = write(tmp_path / "traces", {"a.json": trace(extending(3), "a")})
    out = tmp_path / "out"
    argv = [
        "replay",
        "--trace",
        str(traces),
        "--users",
        "1,2",
        "--duration",
        "30",
        "--policies",
        "vllm",
        "--seeds",
        "0",
        "--profile",
        "llama31-8b-h100-128k",
        "--jobs",
        "1",
        "--no-plots",
        "--allow-dirty",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["users"] for r in rows) == [1, 2]
    assert "per-turn p95 TTFT <= 2 s" in (out / "knees.md").read_text()
