"""The replay engine: vLLM's real scheduler on a virtual clock, the policies, metrics, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vllm.v1.core.sched.scheduler import Scheduler

from lamps.baselines.infercept_model import constants_for, discard_waste
from lamps.replay.engine import RequestRecord, SimEngine
from lamps.replay.metrics import REQUIRED_KEYS, read_rows, summarize, write_results
from lamps.replay.policies import ABLATIONS, POLICY_NAMES, STATELESS_ABLATIONS, make_policy
from lamps.replay.profiles import GIB, GpuProfile, get_profile
from lamps.replay.report import format_table
from lamps.replay.runner import ReplayConfig, arrivals_for
from lamps.workloads import Arrival, TraceSegment, Workload, WorkloadRequest, load_trace

GPTJ = get_profile("gptj-6b-a100")
# GPT-J's layout with room for ~1,000 blocks of KV: memory pressure within a few hundred requests.
SMALL = GpuProfile(
    "gptj-small-test",
    "gptj-6b-a100",
    GPTJ.weight_bytes + 1000 * 16 * 458_752,
    GPTJ.weight_bytes,
    28,
    16,
    256,
    host_memory_bytes=8 * GIB,
)
QPS = 3.0


@pytest.fixture(scope="module")
def workload() -> Workload:
    return load_trace("builtin:infercept-multi-api")


@pytest.fixture(scope="module")
def config() -> ReplayConfig:
    return ReplayConfig(policies=POLICY_NAMES, qps=(QPS,), duration=60.0, noise=0.6, seed=1)


@pytest.fixture(scope="module")
def arrivals(workload: Workload, config: ReplayConfig) -> list[Arrival]:
    return arrivals_for(workload, config)[QPS]


class _Watched(SimEngine):
    """SimEngine recording the virtual time after every iteration and queue states at resumes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []
        self.resumes: list[tuple[str, int, list[str]]] = []
        self.policy.after_iteration = self.times.append  # type: ignore[method-assign]

    def _start_segment(self, rec: RequestRecord) -> None:
        super()._start_segment(rec)
        if rec.segment > 0:
            waiting = [r.request_id for r in self.scheduler.waiting]
            self.resumes.append((rec.arrival.request_id, rec.segment, waiting))


@pytest.fixture(scope="module")
def runs(arrivals: list[Arrival], config: ReplayConfig) -> dict[str, _Watched]:
    engines = {}
    for name in POLICY_NAMES:
        policy = make_policy(
            name, noise=config.noise, seed=config.seed, cost_config=GPTJ.scheduler_cost_config()
        )
        engine = _Watched(SMALL, policy, arrivals, kv_bin_seconds=2.0)
        engine.result = engine.run()  # type: ignore[attr-defined]
        engines[name] = engine
    return engines


def test_profile_capacity_from_model_dimensions() -> None:
    # 40 GiB minus 12.1 GB of fp16 weights, 458,752 bytes per token, 16-token blocks.
    assert GPTJ.cost().kv_bytes_per_token == 2 * 28 * 4096 * 2
    assert GPTJ.num_blocks() == int((40 * GIB - 12_100_000_000) // (458_752 * 16))
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("h100")
    with pytest.raises(ValueError, match="KV layout"):
        GpuProfile("bad", "gptj-6b-a100", 40 * GIB, 1, 28, 8, 256)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_conservation(runs: dict[str, _Watched], arrivals: list[Arrival], name: str) -> None:
    engine = runs[name]
    assert isinstance(engine.scheduler, Scheduler)
    records = engine.result.records  # type: ignore[attr-defined]
    assert [r.arrival for r in records] == arrivals
    for rec in records:
        tmpl = rec.arrival.request
        assert rec.finished, rec.arrival.request_id
        assert rec.output_tokens == tmpl.output_tokens
        assert rec.api_seconds == pytest.approx(tmpl.api_seconds)
        assert rec.arrival.time < rec.first_token_time <= rec.finish_time
        # API time is spent outside the engine: e2e covers it plus at least the service time.
        e2e = rec.finish_time - rec.arrival.time
        assert e2e >= rec.api_seconds + rec.service_seconds - 1e-9
        # Each context token but the last is computed at least once.
        assert rec.scheduled_tokens >= tmpl.final_context_tokens - 1
    times = np.array(engine.times)
    assert np.all(np.diff(times) > 0), "virtual time went backwards or stood still"
    assert times[-1] == pytest.approx(max(r.finish_time for r in records))
    # Everything was freed at the end: no request left in vLLM, no block held.
    assert not engine.scheduler.requests
    assert engine.scheduler.kv_cache_manager.usage == 0.0


def test_identical_arrivals_across_policies(
    workload: Workload, config: ReplayConfig, runs: dict[str, _Watched]
) -> None:
    again = arrivals_for(workload, config)[QPS]
    for engine in runs.values():
        got = [(r.arrival.time, r.arrival.request.request_id) for r in engine.result.records]
        assert got == [(a.time, a.request.request_id) for a in again]


def test_vllm_continuation_reenters_at_the_back(runs: dict[str, _Watched]) -> None:
    engine = runs["vllm"]
    assert engine.resumes
    behind_others = 0
    for rid, segment, waiting in engine.resumes:
        # A new request carrying the whole context, appended behind everything already waiting.
        assert waiting[-1] == f"{rid}.{segment}"
        behind_others += len(waiting) > 1
    assert behind_others > 0, "no continuation ever queued behind another request"
    # Prefix caching gives most of the context back, but not all of it under pressure.
    recomputed = summarize(engine.result, QPS, kv_bytes_per_token=1.0)["recomputed_tokens"]
    assert recomputed > 0


def test_sessions_keep_one_request(runs: dict[str, _Watched]) -> None:
    engine = runs["vllm-preserve"]
    assert engine.resumes
    for rid, _, waiting in engine.resumes:
        assert f"{rid}.1" not in waiting
    row = summarize(engine.result, QPS, kv_bytes_per_token=1.0)
    policy_rows = {n: summarize(e.result, QPS, kv_bytes_per_token=1.0) for n, e in runs.items()}
    # Preserve never frees a paused context: it needs far less recompute than stock vLLM.
    assert row["recomputed_tokens"] < policy_rows["vllm"]["recomputed_tokens"]


def _two_pause_workload(api_seconds: float) -> list[Arrival]:
    def paused(name: str, prompt: int) -> WorkloadRequest:
        return WorkloadRequest(
            name, prompt, (TraceSegment(8, api_seconds, 12, True), TraceSegment(8)), "qa"
        )

    busy = WorkloadRequest("busy", 300, (TraceSegment(400),), "math")
    return [
        Arrival(0, 0.0, paused("paused", 1000)),
        Arrival(1, 0.0, paused("small", 600)),
        Arrival(2, 0.01, busy),
        Arrival(3, 0.02, busy),
    ]


@pytest.mark.parametrize("api_seconds", [30.0, 0.0005])
def test_infercept_discards_all_candidates_but_the_costliest(api_seconds: float) -> None:
    arrivals = _two_pause_workload(api_seconds)
    engine = SimEngine(
        GPTJ, make_policy("infercept", cost_config=GPTJ.scheduler_cost_config()), arrivals
    )
    result = engine.run()
    stats = result.policy_stats
    budget = result.settings["token_budget"]
    # At the pauses: ~1,007 and ~607 context tokens, two decoding requests beside them. Both
    # are discard candidates for a long call (w_d < w_p, InferCept's formulas); only the
    # cheaper is discarded, the costlier stays preserved as the eviction victim.
    k = constants_for(GPTJ.cost_model)
    running = 2 * 312
    candidates = [
        discard_waste(tokens, 2, running, k, budget) < api_seconds * tokens
        for tokens in (1008, 608)
    ]
    assert candidates == [api_seconds > 1] * 2
    assert stats["pauses"] == 2
    assert stats["discarded"] == int(api_seconds > 1)
    assert all(rec.finished and rec.output_tokens == 16 for rec in result.records[:2])
    if api_seconds > 1:
        # Recomputed on resume, minus what the prefix cache still held.
        assert stats["prefix_hit_tokens"] > 0


def test_infercept_discards_under_load(runs: dict[str, _Watched]) -> None:
    stats = runs["infercept"].result.policy_stats
    assert stats["pauses"] > 100
    assert 0 < stats["discarded"] < stats["pauses"]


def test_lamps_policies_use_the_plugin(runs: dict[str, _Watched]) -> None:
    from lamps.vllm import LampsSyncScheduler

    for name in ("lamps", "lamps-oracle", "lamps-no-rank"):
        sched = runs[name].scheduler
        assert isinstance(sched, LampsSyncScheduler)
        stats = runs[name].result.policy_stats
        assert stats["pauses"] > 100 and stats["hint_warnings"] == 0
    assert runs["lamps-no-rank"].result.policy_stats["rescores"] == 0
    assert runs["lamps"].result.policy_stats["rescores"] > 0


def test_noise_only_changes_the_hints(arrivals: list[Arrival]) -> None:
    exact = make_policy("lamps-oracle", noise=0.6, cost_config=GPTJ.scheduler_cost_config())
    noisy = make_policy("lamps", noise=0.6, seed=1, cost_config=GPTJ.scheduler_cost_config())
    a = arrivals[0]
    truth = exact.hints(a, 0)
    assert truth["predicted_output_tokens"] == a.request.segments[0].output_tokens
    got = [noisy.hints(x, 0)["predicted_output_tokens"] for x in arrivals]
    want = [x.request.segments[0].output_tokens for x in arrivals]
    rel = np.array(got) / np.array(want) - 1
    assert 0.3 < np.std(rel) < 0.9
    assert noisy.hints(a, 0) == noisy.hints(a, 0)


def test_results_json_schema(runs: dict[str, _Watched], tmp_path: Path) -> None:
    rows = [summarize(e.result, QPS, kv_bytes_per_token=458_752.0) for e in runs.values()]
    path = write_results(rows, tmp_path, provenance={"commit": "x"})
    assert json.loads(path.read_text())["provenance"] == {"commit": "x"}
    loaded = read_rows(path)
    assert [r["policy"] for r in loaded] == list(POLICY_NAMES)
    for row in loaded:
        for key in REQUIRED_KEYS:
            assert key in row, key
        assert row["qps"] == QPS and row["num_requests"] == len(runs["vllm"].result.records)
        assert 0 < row["ttft_mean"] <= row["e2e_mean"]
        assert row["e2e_p50"] <= row["e2e_p99"]
        assert row["throughput"] > 0 and row["normalized_latency_mean"] > 0
        assert all(0.0 <= u <= 1.0 for _, u in row["kv_usage"])
    swapping = [r for r in loaded if r["policy"].startswith("lamps")]
    assert any(r["swapped_bytes"] > 0 for r in swapping)
    stock = ("vllm", "vllm-preserve")  # vLLM without a KV connector moves no KV to the host
    assert all(r["swapped_bytes"] == 0 for r in loaded if r["policy"] in stock)
    assert next(r for r in loaded if r["policy"] == "vllm-offload")["swapped_bytes"] > 0
    table = format_table(loaded)
    assert all(p in table for p in POLICY_NAMES)
    assert all(row["unfinished"] == 0 for row in loaded)


def test_replay_config_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown policy 'fifo'"):
        ReplayConfig(policies=("fifo",))
    with pytest.raises(ValueError, match="qps"):
        ReplayConfig(qps=(0.0,))
    with pytest.raises(ValueError, match="duration"):
        ReplayConfig(duration=-1)
    with pytest.raises(ValueError, match="noise"):
        ReplayConfig(noise=float("nan"))
    with pytest.raises(ValueError, match="unknown profile"):
        ReplayConfig(profile="x")
    with pytest.raises(ValueError, match="nothing to replay"):
        SimEngine(GPTJ, make_policy("vllm", cost_config=GPTJ.scheduler_cost_config()), [])


def test_cli_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lamps.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "replay",
            "--synthetic",
            "--qps",
            "2",
            "--duration",
            "8",
            "--policies",
            "vllm,infercept,lamps",
            "--seeds",
            "0",
            "--jobs",
            "1",
            "--allow-dirty",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = read_rows(out / "results.json")
    assert sorted(r["policy"] for r in rows) == ["infercept", "lamps", "vllm"]
    assert "commit" in json.loads((out / "results.json").read_text())["provenance"]
    assert (out / "latency.png").stat().st_size > 0 and (out / "kv_usage.png").stat().st_size > 0
    assert "lamps replay" in (out / "command.txt").read_text()
    assert "| infercept |" in (out / "table.md").read_text()
    printed = capsys.readouterr().out
    assert "P99 TTFT" in printed and "infercept" in printed and "knees" in printed


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from lamps.cli import main

    with pytest.raises(SystemExit) as e:
        main(["replay", "--policies", "vllm,bogus"])
    assert e.value.code == 2
    assert "unknown policy 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["replay", "--qps", "x"])


@pytest.mark.parametrize("module", ["vllm", "matplotlib"])
def test_cli_names_a_missing_module_and_how_to_get_it(module: str, tmp_path: Path) -> None:
    # A fresh interpreter in which `module` cannot be imported (None in sys.modules).
    code = (
        f"import sys; sys.modules[{module!r}] = None; from lamps.cli import main; "
        f"sys.exit(main(['replay', '--qps', '1', '--duration', '1', '--policies', 'vllm', "
        f"'--out', {str(tmp_path)!r}, '--allow-dirty']))"
    )
    # cwd: not the source tree, whose `lamps` (no compiled core) `-c` would put first.
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert f"`lamps replay` needs module {module!r}: install" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", sorted([*ABLATIONS, *STATELESS_ABLATIONS]))
def test_ablation_policies_run_lamps_with_their_switch(
    runs: dict[str, _Watched], name: str
) -> None:
    config = runs[name].scheduler.lamps_config  # type: ignore[attr-defined]
    switches, _ = {**ABLATIONS, **STATELESS_ABLATIONS}[name]
    assert {key: getattr(config, key) for key in switches} == switches
    # Everything else is the default LAMPS configuration.
    base = "lamps-stateless" if name in STATELESS_ABLATIONS else "lamps"
    default = runs[base].scheduler.lamps_config  # type: ignore[attr-defined]
    others = {f: getattr(config, f) for f in vars(config) if f not in switches}
    assert others == {f: getattr(default, f) for f in others}


def test_a_replay_loads_every_module_it_runs_before_its_first_job(tmp_path: Path) -> None:
    # Sources edited while a long replay runs must not mix old and new code in one worker: the
    # policies' modules are loaded up front (their factories import them lazily otherwise).
    wanted = [
        "lamps.baselines.continuum",
        "lamps.baselines.infercept",
        "lamps.baselines.infercept_paper",
        "lamps.baselines.lamps_authors",
        "lamps.connector",
        "lamps.replay.engine",
        "lamps.vllm.scheduler",
    ]
    code = (
        "import json, sys; from lamps.replay import runner; "
        f"before = [m for m in {wanted!r} if m in sys.modules]; "
        "runner._import_everything(); "
        f"print(json.dumps([before, [m for m in {wanted!r} if m not in sys.modules]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    before, missing = json.loads(out.strip().splitlines()[-1])
    assert before != wanted, "importing the runner already loads them all: nothing is tested"
    assert missing == []
