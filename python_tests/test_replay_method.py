"""The replay's methodology: engine model, swap stalls, intervals, knees, steady window,
provenance, traces and the policy registry."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lamps.replay.engine import SimEngine
from lamps.replay.engine_model import EngineModel, StepClock, prefill_pairs
from lamps.replay.metrics import SteadyWindow, steady_metrics, summarize
from lamps.replay.policies import REGISTRY, make_policy, register
from lamps.replay.profiles import ENGINE_SETTINGS, EngineSettings, get_profile
from lamps.replay.provenance import DirtyTreeError, provenance, require_clean
from lamps.replay.records import RequestRecord
from lamps.replay.report import knees
from lamps.replay.stats import crossing, interval, knee, t_critical
from lamps.workloads import Arrival, TraceSegment, WorkloadRequest, load_trace
from lamps.workloads.agent import MAX_CONTEXT, TOOL_TIME_BANDS, agent_workload, tool_seconds

GPTJ = get_profile("gptj-6b-a100")


def _model(**kw: float) -> EngineModel:
    base = dict(
        a_ms_per_token=0.05,
        b_ms=1.0,
        weights_ms=10.0,
        overhead_ms=2.0,
        kv_bytes_per_token=1e6,
        hbm_bytes_per_second=1e12,
        kv_read_efficiency=0.5,
        prefill_ms_per_token_pair=1e-6,
        num_layers=2,
        q_dim=4096,
        link_bytes_per_second=1e10,
    )
    base.update(kw)
    return EngineModel(**base)  # type: ignore[arg-type]


def test_engine_model_terms() -> None:
    m = _model()
    # Linear layers: a roofline, the weights' read until the tokens' products pass it.
    assert m.step_ms(1, 0, 0) == pytest.approx(2.0 + 10.0)
    assert m.step_ms(1000, 0, 0) == pytest.approx(2.0 + 1.0 + 50.0)
    # A decode reads its context: 1e6 bytes a token at 0.5 * 1 TB/s = 2 us a token.
    assert m.kv_read_ms_per_token == pytest.approx(2e-3)
    assert m.step_ms(1, 10_000, 0) == pytest.approx(12.0 + 20.0)
    # Prefill attention: pairs x per-pair cost x layers (q_dim at the reference width).
    assert m.step_ms(1, 0, 1e6) == pytest.approx(12.0 + 1e6 * 1e-6 * 2)
    assert prefill_pairs(0, 4) == pytest.approx(4 * 2.5)
    assert prefill_pairs(100, 1) == pytest.approx(101)


def test_step_clock_tells_decodes_from_prefills() -> None:
    m = _model()
    clock = StepClock(m)
    clock.add(999, 1)  # a decode at context 1,000
    clock.add(0, 512)  # a fresh prefill
    clock.add(1024, 256)  # a chunk after cached context
    assert clock.tokens == 1 + 512 + 256
    assert clock.decode_context == 1000
    assert clock.pairs == pytest.approx(prefill_pairs(0, 512) + prefill_pairs(1024, 256))
    assert clock.compute_seconds() == pytest.approx(1e-3 * m.step_ms(769, 1000, clock.pairs))


def test_engine_model_rejects_bad_coefficients() -> None:
    with pytest.raises(ValueError, match="hidden_fraction"):
        _model(hidden_fraction=1.5)
    with pytest.raises(ValueError, match="hbm_bytes_per_second"):
        _model(hbm_bytes_per_second=0.0)
    with pytest.raises(ValueError, match="kv_read_efficiency"):
        _model(kv_read_efficiency=2.0)


@pytest.mark.parametrize("hidden", [0.0, 0.5, 1.0])
def test_swap_stall_is_what_the_step_does_not_hide(hidden: float) -> None:
    m = _model(hidden_fraction=hidden)
    compute = 0.030
    assert m.stall_seconds(0.0, compute) == 0.0
    assert m.stall_seconds(0.010, compute) == pytest.approx(max(0.0, 0.010 - hidden * compute))
    assert m.stall_seconds(0.100, compute) == pytest.approx(0.100 - hidden * compute)
    assert m.swap_seconds(1000) == pytest.approx(1000 * 1e6 / 1e10)


def test_gptj_engine_reads_kv_like_the_notes_say() -> None:
    m = GPTJ.engine_model()
    # 60k context tokens of GPT-J: ~27.5 GB read; at the A100-40GB's 1,555 GB/s and vidur's
    # 81% attention efficiency that is ~22 ms, as much again as the fixed part.
    kv_ms = m.kv_read_ms_per_token * 60_000
    assert 18 < kv_ms < 26
    assert 10 < m.step_ms(1, 0, 0) < 16
    h100 = get_profile("llama31-8b-h100").engine_model()
    assert h100.kv_read_ms_per_token < m.kv_read_ms_per_token / 5


def _tiny_swap_run(hidden: float) -> tuple[float, float]:
    paused = WorkloadRequest("p", 1500, (TraceSegment(8, 20.0, 12, True), TraceSegment(8)), "chat")
    busy = WorkloadRequest("b", 300, (TraceSegment(600),), "math")
    arrivals = [Arrival(0, 0.0, paused), Arrival(1, 0.01, busy), Arrival(2, 0.02, busy)]
    # A LAMPS cost model that makes swap look cheap, so the pause is swapped.
    policy = make_policy(
        "lamps-oracle",
        cost_config={
            "cost_model": {
                "a_ms_per_token": 0.0408,
                "c_ms": 16.92,
                "kv_bytes_per_token": 458_752.0,
                "link_bytes_per_second": 1e15,
            }
        },
    )
    engine = SimEngine(GPTJ, policy, arrivals, settings=EngineSettings(hidden_fraction=hidden))
    result = engine.run()
    assert all(r.finished for r in result.records)
    assert result.policy_stats["swapped_bytes"] > 0
    return result.engine_stats["swap_stall_seconds"], result.engine_stats["compute_seconds"]


def test_swap_copies_stall_the_step_when_not_hidden() -> None:
    stall_hidden, _ = _tiny_swap_run(1.0)
    stall_serial, _ = _tiny_swap_run(0.0)
    # ~1,500 tokens x 458,752 B at 25 GB/s = ~28 ms out (the way back may be served by the
    # prefix cache); serial copies stall all of it, hidden ones only what outlasts a step.
    assert stall_serial >= 0.0275
    assert stall_hidden < stall_serial


def test_t_interval() -> None:
    assert t_critical(4) == pytest.approx(2.776)
    assert t_critical(1000) == pytest.approx(1.962, abs=2e-3)
    iv = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert iv.mean == 3.0
    assert iv.half_width == pytest.approx(2.776 * math.sqrt(2.5 / 5))
    assert math.isnan(interval([7.0]).half_width)
    assert math.isinf(interval([1.0, math.inf]).mean)
    with pytest.raises(ValueError):
        t_critical(0)


def test_knee_and_crossing() -> None:
    pts = [(1.0, 0.1), (2.0, 0.5), (3.0, 1.9), (4.0, 5.0), (5.0, 1.0)]
    assert knee(pts, 2.0) == 3.0  # 5.0 passes again but 4.0 did not
    assert knee(pts, 0.05) is None
    assert crossing([(1.0, 1.0), (2.0, 100.0)], 10.0) == pytest.approx(1.5)
    assert crossing([(1.0, 1.0), (2.0, math.inf)], 10.0) == pytest.approx(1.5)
    assert crossing([(1.0, 1.0), (2.0, 2.0)], 10.0) is None
    rows = [
        {"policy": "a", "qps": q, "seed": s, "steady_ttft_p99": v}
        for s in range(3)
        for q, v in [(1.0, 0.1), (2.0, 0.2 + s), (3.0, math.inf)]
    ]
    k = knees(rows, slo=1.0)["a"]
    assert k["knee"] == 1.0  # mean P99 at 2 req/s is 1.2 s
    assert k["knee_per_seed"].mean == pytest.approx((2 + 1 + 1) / 3)


def _rec(arrival: float, first: float | None, finish: float | None, tokens: int) -> RequestRecord:
    tmpl = WorkloadRequest("x", 10, (TraceSegment(tokens),), "math")
    r = RequestRecord(Arrival(0, arrival, tmpl))
    r.first_token_time, r.finish_time = first, finish
    r.output_tokens = r.tokens_at_window = tokens if finish is not None else tokens // 2
    return r


def test_steady_window_counts_what_finished_and_what_did_not() -> None:
    window = SteadyWindow.for_duration(100.0)  # arrivals in [10, 80), seen at 100
    recs = [
        _rec(5.0, 5.5, 6.0, 10),  # warm-up: not counted
        _rec(20.0, 20.5, 30.0, 10),  # finished
        _rec(50.0, 51.0, 120.0, 10),  # first token, finished after the window: unfinished
        _rec(70.0, None, None, 10),  # never served by the window's end
        _rec(90.0, 90.1, 91.0, 10),  # after the cut-off: not counted
    ]
    recs[2].tokens_at_window = 5  # half its tokens by the window's end
    m = steady_metrics(recs, window)
    assert m["steady_requests"] == 3
    assert m["steady_finished"] == 1 and m["steady_unfinished"] == 2
    assert m["steady_no_first_token"] == 1
    assert math.isinf(m["steady_ttft_p99"])  # a third of the requests never got a token
    assert m["steady_e2e_mean"] == pytest.approx(10.0)
    # The driver's normalized latency: the unfinished one measured to the window's end.
    assert m["steady_normalized_latency_mean"] == pytest.approx((10.0 / 10 + 50.0 / 5) / 2)


def test_engine_stops_at_the_window_and_snapshots() -> None:
    wl = load_trace("builtin:infercept-multi-api")
    from lamps.workloads import poisson_arrivals

    arrivals = poisson_arrivals(wl, 3.0, 20.0, 0)
    policy = make_policy("vllm")
    result = SimEngine(GPTJ, policy, arrivals, window_end=20.0, stop_at=25.0).run()
    assert result.stopped_at is not None and 25.0 <= result.stopped_at < 26.0
    assert any(not r.finished for r in result.records)
    assert all(r.tokens_at_window is not None for r in result.records)
    row = summarize(result, 3.0, kv_bytes_per_token=1.0, window=SteadyWindow.for_duration(20.0))
    assert row["unfinished"] > 0 and row["steady_requests"] > 0


def test_provenance_refuses_a_dirty_tree(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    (tmp_path / "lamps").mkdir()
    (tmp_path / "lamps" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "one")
    clean = provenance(tmp_path)
    assert clean.commit and len(clean.commit) == 40 and not clean.dirty
    require_clean(clean, allow_dirty=False)
    (tmp_path / "lamps" / "a.py").write_text("x = 2\n")
    dirty = provenance(tmp_path)
    assert dirty.dirty and dirty.changed == ("lamps/a.py",)
    assert "DIRTY" in dirty.banner()
    with pytest.raises(DirtyTreeError, match="--allow-dirty"):
        require_clean(dirty, allow_dirty=False)
    require_clean(dirty, allow_dirty=True)
    assert provenance(tmp_path / "nowhere").commit is None


def test_single_api_variant() -> None:
    multi = load_trace("builtin:infercept-multi-api")
    single = load_trace("builtin:infercept-single-api")
    assert len(single.requests) == len(multi.requests) == 397
    for m, s in zip(multi.requests, single.requests, strict=True):
        assert s.num_api_calls == min(1, m.num_api_calls)
        assert s.prompt_tokens == m.prompt_tokens
        assert s.segments[-1] == m.segments[-1]
        if m.num_api_calls:
            assert s.segments[0] == next(x for x in m.segments if x.has_api)


def test_agent_trace_matches_its_sources() -> None:
    wl = agent_workload(2000, seed=3)
    rng = np.random.default_rng(0)
    times = np.array([tool_seconds(rng) for _ in range(20_000)])
    assert np.mean(times < 1.0) == pytest.approx(TOOL_TIME_BANDS[0][0], abs=0.01)
    assert np.mean(times < 10.0) == pytest.approx(0.95, abs=0.01)
    by_kind: dict[str, list[WorkloadRequest]] = {}
    for r in wl.requests:
        by_kind.setdefault(r.kind, []).append(r)
        assert r.final_context_tokens <= MAX_CONTEXT
    turns = {k: np.mean([len(r.segments) for r in v]) for k, v in by_kind.items()}
    assert turns["swe-bench"] == pytest.approx(10.9, rel=0.15)
    assert turns["bfcl"] == pytest.approx(6.3, rel=0.15)
    prod = by_kind["production"]
    assert np.median([len(r.segments) for r in prod]) == pytest.approx(43, rel=0.15)
    # ~142k input tokens a session (each turn resends the context) and ~444 output tokens.
    inputs = [sum(r.context_before(k) for k in range(len(r.segments))) for r in prod]
    assert np.median(inputs) == pytest.approx(142_000, rel=0.35)
    assert np.median([r.output_tokens for r in prod]) == pytest.approx(444, rel=0.35)
    # Prefix-cache hit rate if every turn's earlier context is cached: > 96%.
    hit = 1 - sum(r.final_context_tokens for r in prod) / sum(inputs)
    assert hit > 0.96
    assert agent_workload(5, seed=1) == agent_workload(5, seed=1)


def test_registry_is_extensible_and_modes_are_explicit() -> None:
    assert make_policy("vllm").api_mode == "stateless"
    assert not make_policy("vllm").sessions
    assert make_policy("lamps").api_mode == "session"
    assert set(ENGINE_SETTINGS) >= {"vllm-0.32", "paper"}
    from lamps.replay.policies import VllmPolicy

    class Echo(VllmPolicy):
        name = "echo-test"

    register("echo-test", lambda c: Echo(), "a test policy")
    try:
        assert make_policy("echo-test").name == "echo-test"
        with pytest.raises(ValueError, match="already registered"):
            register("echo-test", lambda c: Echo(), "again")
    finally:
        del REGISTRY["echo-test"]


def test_stateless_turns_carry_the_session_id() -> None:
    wl = load_trace("builtin:agent")
    arrivals = [Arrival(0, 0.0, wl.requests[0])]
    engine = SimEngine(get_profile("llama31-8b-h100"), make_policy("vllm"), arrivals)
    seen: list[tuple[str, str | None]] = []
    add = engine.scheduler.add_request

    def spy(req):  # type: ignore[no-untyped-def]
        seen.append((req.request_id, req.session_id))
        return add(req)

    engine.scheduler.add_request = spy  # type: ignore[method-assign]
    result = engine.run()
    assert result.records[0].finished
    assert len(seen) == len(wl.requests[0].segments)
    assert all(sid == "r0" and rid.startswith("r0.") for rid, sid in seen)
