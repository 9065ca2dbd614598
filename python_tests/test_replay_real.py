"""--engine real: the same policies through a real vLLM AsyncLLM on CPU (tiny model)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from lamps.replay.metrics import REQUIRED_KEYS, read_rows
from lamps.replay.real import scale_workload
from lamps.workloads import load_trace


def test_scaled_workload_keeps_the_shape() -> None:
    w = load_trace("builtin:infercept-multi-api")
    s = scale_workload(w)
    assert len(s.requests) == len(w.requests)
    for a, b in zip(w.requests, s.requests, strict=True):
        assert b.num_api_calls == a.num_api_calls and b.kind == a.kind
        assert b.prompt_tokens >= 8 and all(seg.output_tokens >= 1 for seg in b.segments)
        assert b.api_seconds == pytest.approx(a.api_seconds / 20)
    assert s.max_context_tokens < w.max_context_tokens // 4


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
# AsyncLLM.shutdown() leaves its zmq context and a shared-memory segment to the garbage
# collector, which reports them as unclosed resources.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_engine_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamps.cli import main

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    out = tmp_path / "real"
    rc = main(
        [
            "replay",
            "--engine",
            "real",
            "--policies",
            "vllm,lamps",
            "--qps",
            "2",
            "--duration",
            "4",
            "--out",
            str(out),
            "--no-plots",
            "--allow-dirty",  # provenance has its own tests; this one runs on any tree
        ]
    )
    gc.collect()
    assert rc == 0
    rows = read_rows(out / "results.json")
    assert [r["policy"] for r in rows] == ["vllm", "lamps"]
    assert rows[0]["num_requests"] == rows[1]["num_requests"] > 0
    for row in rows:
        assert row["engine"] == "real"
        for key in REQUIRED_KEYS:
            assert row[key] is not None, key
        assert 0 < row["ttft_mean"] < row["e2e_mean"]
        assert row["recomputed_tokens"] is None and row["kv_usage"]
