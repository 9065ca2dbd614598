"""lamps.workloads: InferCept-format loading, validation, the synthetic mixture, arrivals."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from lamps.workloads import (
    BUILTIN_TRACES,
    KINDS,
    STATS_FILE,
    derive_stats,
    estimate_tokens,
    load_stats,
    load_trace,
    parse_trace,
    poisson_arrivals,
    synthetic_workload,
)

SHARED_TRACE = Path(__file__).resolve().parents[2] / "shared/workloads/infercept_multi_api.json"


def _numeric(prompt=100, out=10, api=1.5, ret=5, out2=7) -> list[dict]:
    return [
        {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "api_time": api,
            "api_token_length": ret,
        },
        {"prompt_tokens": prompt + out + ret, "completion_tokens": out2},
    ]


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(data))
    return path


def test_numeric_trace_segments_and_context(tmp_path: Path) -> None:
    w = load_trace(
        _write(tmp_path, {"a": _numeric(), "b": [{"prompt_tokens": 9, "completion_tokens": 3}]})
    )
    a, b = w.requests
    assert a.prompt_tokens == 100 and a.num_api_calls == 1
    assert a.segments[0].has_api and not a.segments[1].has_api
    assert a.output_tokens == 17 and a.return_tokens == 5 and a.api_seconds == 1.5
    assert a.context_before(1) == 115 and a.final_context_tokens == 122
    assert b.num_api_calls == 0 and b.final_context_tokens == 12


def test_text_trace_estimates_tokens_and_drops_trailing_call(tmp_path: Path) -> None:
    data = {
        "t": [
            {
                "prompt": "x" * 40,
                "completion": "y" * 20,
                "api_token": "Convert this to text to speech. ",
                "api_time": 3.0,
            },
            {"prompt": "ignored", "completion": "z" * 8, "api_token": "q" * 12, "api_time": 9.0},
        ]
    }
    (r,) = load_trace(_write(tmp_path, data)).requests
    assert r.kind == "chat_tts"
    assert r.prompt_tokens == 10 and [s.output_tokens for s in r.segments] == [5, 2]
    # The last segment's call has nothing generated after it: it is not part of the request.
    assert r.num_api_calls == 1 and r.api_seconds == 3.0
    assert estimate_tokens("") == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["a"][0].pop("api_time"), "request 'a' segment 0: missing field 'api_time'"),
        (lambda d: d["a"][0].update(api_time=-1), "'api_time' must be finite and >= 0"),
        (lambda d: d["a"][0].update(api_time=float("nan")), "'api_time' must be finite"),
        (lambda d: d["a"][0].update(completion_tokens=0), "'completion_tokens' must be >= 1"),
        (lambda d: d["a"][0].update(prompt_tokens="12"), "'prompt_tokens' must be an integer"),
        (lambda d: d["a"][0].update(api_token_length=2.5), "'api_token_length' must be an int"),
        (lambda d: d["a"][1].update(prompt_tokens=999), "segment 1: field 'prompt_tokens' is 999"),
        (lambda d: d.update(a=[]), "request 'a': must be a non-empty list"),
        (lambda d: d.update(a=[3]), "request 'a' segment 0: must be an object"),
    ],
)
def test_malformed_trace_names_field_and_request(tmp_path: Path, mutate, message) -> None:
    data = {"a": _numeric()}
    mutate(data)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_trace(_write(tmp_path, data))


def test_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top level must be an object"):
        load_trace(_write(tmp_path, [1, 2]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_trace(bad)
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown builtin trace"):
        load_trace("builtin:nope")
    with pytest.raises(ValueError, match="no requests"):
        parse_trace({})


def test_builtin_trace_is_the_six_type_mixture() -> None:
    w = load_trace("builtin:infercept-multi-api")
    assert len(w.requests) == 397
    counts = w.kind_counts()
    assert set(counts) == set(KINDS)
    # Published mixture: math 25%, QA 12%, virtual env 14%, three chat types 16% each.
    shares = {k: v / 397 for k, v in counts.items()}
    assert shares["math"] == pytest.approx(0.25, abs=0.02)
    assert shares["qa"] == pytest.approx(0.12, abs=0.01)
    assert shares["virtual_env"] == pytest.approx(0.14, abs=0.01)
    for k in ("chat", "chat_image", "chat_tts"):
        assert shares[k] == pytest.approx(0.16, abs=0.01)
    assert max(r.num_api_calls for r in w.requests) == 15


@pytest.mark.skipif(not SHARED_TRACE.is_file(), reason="the shared trace is not on this machine")
def test_builtin_trace_matches_the_original_file() -> None:
    assert load_trace(SHARED_TRACE).requests == load_trace("builtin:infercept-multi-api").requests


def test_shipped_stats_are_derived_from_the_shipped_trace() -> None:
    w = load_trace("builtin:infercept-multi-api")
    derived = json.loads(json.dumps(derive_stats(w, "infercept_multi_api.json")))
    assert derived == load_stats()


def test_cli_derive_writes_the_shipped_files(tmp_path: Path) -> None:
    from lamps.cli import main

    assert main(["workloads", "derive", "builtin:infercept-multi-api", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats["source"] == "builtin:infercept-multi-api"
    assert {**stats, "source": ""} == {**load_stats(), "source": ""}
    name = BUILTIN_TRACES["infercept-multi-api"]
    shipped = resources.files("lamps.data").joinpath(name).read_bytes()
    assert gzip.decompress((tmp_path / name).read_bytes()) == gzip.decompress(shipped)


def test_synthetic_mixture_matches_the_trace() -> None:
    trace = load_trace("builtin:infercept-multi-api").requests
    syn = synthetic_workload(4000, seed=3)
    assert syn.requests == synthetic_workload(4000, seed=3).requests
    assert syn.requests != synthetic_workload(4000, seed=4).requests
    counts = syn.kind_counts()
    assert counts["math"] / 4000 == pytest.approx(0.25, abs=0.03)
    for attr in ("output_tokens", "api_seconds", "num_api_calls", "final_context_tokens"):
        want = np.mean([getattr(r, attr) for r in trace])
        got = np.mean([getattr(r, attr) for r in syn.requests])
        assert got == pytest.approx(want, rel=0.1), attr
    chat = [r for r in syn.requests if r.kind == "chat_tts"]
    # TTS calls alternate with long human replies, as in the trace.
    assert np.mean([r.segments[0].api_seconds for r in chat if r.num_api_calls >= 2]) < np.mean(
        [r.segments[1].api_seconds for r in chat if r.num_api_calls >= 2]
    )


def test_synthetic_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="num_requests"):
        synthetic_workload(0)
    with pytest.raises(ValueError, match="'kinds'"):
        synthetic_workload(5, stats={"kinds": {}})
    with pytest.raises(ValueError, match="missing field 'phases'"):
        synthetic_workload(
            5,
            stats={
                "kinds": {
                    "m": {
                        "weight": 1,
                        "calls_pmf": {"0": 1},
                        "prompt_tokens": [1, 2],
                        "final_output_tokens": [1, 2],
                    }
                }
            },
        )


def test_poisson_arrivals() -> None:
    w = synthetic_workload(50, seed=1)
    a = poisson_arrivals(w, 5.0, 400.0, seed=7)
    times = np.array([x.time for x in a])
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] < 400
    # 2000 expected arrivals: a 5-sigma band.
    assert abs(len(a) - 2000) < 5 * np.sqrt(2000)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(0.2, rel=0.1)
    assert [x.index for x in a] == list(range(len(a)))
    assert len({x.request_id for x in a}) == len(a)
    # Sampled with replacement: templates repeat.
    assert len({x.request.request_id for x in a}) <= 50 < len(a)
    assert a == poisson_arrivals(w, 5.0, 400.0, seed=7)
    assert a != poisson_arrivals(w, 5.0, 400.0, seed=8)
    with pytest.raises(ValueError, match="qps"):
        poisson_arrivals(w, 0, 10)
    with pytest.raises(ValueError, match="duration"):
        poisson_arrivals(w, 1, float("inf"))


def test_the_authors_single_api_trace_is_shipped() -> None:
    """builtin:mars-single-api is the LAMPS authors' file: 397 requests, one call each, about
    7.7 s of API time per request (mars-codebase diverse_oneapi_merged_exp_uniform.json)."""
    w = load_trace("builtin:mars-single-api")
    assert len(w.requests) == 397
    assert all(r.num_api_calls == 1 for r in w.requests)
    assert sum(r.api_seconds for r in w.requests) / 397 == pytest.approx(7.66, abs=0.01)
    assert w.max_context_tokens <= 2048 + 64
