"""LampsConfig: sources, precedence and validation; hints and predictors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lamps.mechanism.hints import Hints, parse_hints
from lamps.vllm import LampsConfig
from lamps.vllm.predictors import ApiDurationPredictor


def test_defaults_work_untouched() -> None:
    cfg = LampsConfig.load({}, environ={})
    assert cfg == LampsConfig()
    assert cfg.make_cost_model().name == "gptj-6b-a100"


def test_precedence_additional_config_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "lamps.json"
    path.write_text(json.dumps({"starvation_threshold": 7, "ranking": False, "log_interval_s": 3}))
    env = {"LAMPS_CONFIG": str(path), "LAMPS_STARVATION_THRESHOLD": "9", "LAMPS_ALLOW_SWAP": "no"}
    cfg = LampsConfig.load({"lamps": {"starvation_threshold": 11}}, environ=env)
    assert cfg.starvation_threshold == 11  # additional_config wins
    assert cfg.allow_swap is False  # env
    assert cfg.ranking is False and cfg.log_interval_s == 3  # file


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"starvation_threshold": -1}, "starvation_threshold"),
        ({"ranking": "yes"}, "ranking"),
        ({"rescore_interval": 0}, "rescore_interval"),
        ({"log_interval_s": float("nan")}, "log_interval_s"),
        ({"default_api_seconds": -2.0}, "default_api_seconds"),
        ({"profile": ""}, "profile"),
        ({"cost_model": {"a_ms_per_token": 0.04}}, "cost_model"),
        (
            {
                "cost_model": {
                    "a_ms_per_token": 0.04,
                    "c_ms": 1,
                    "kv_bytes_per_token": -1,
                    "link_bytes_per_second": 1e9,
                }
            },
            "kv_bytes_per_token",
        ),
        ({"no_such_key": 1}, "no_such_key"),
    ],
)
def test_bad_values_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        LampsConfig.load({"lamps": values}, environ={})


COST_MODEL = {
    "a_ms_per_token": 0.04,
    "c_ms": 10.0,
    "kv_bytes_per_token": 1e5,
    "link_bytes_per_second": 1e10,
}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"starvation_threshold": 2**63}, "starvation_threshold"),
        ({"rescore_interval": 2**63}, "rescore_interval"),
        ({"default_output_tokens": 2**63}, "default_output_tokens"),
        ({"default_output_tokens": 2**53 + 1}, "default_output_tokens"),
        ({"starvation_share": 2**63}, "starvation_share"),
        ({"max_preemptions": 2**63}, "max_preemptions"),
        ({"cost_model": {**COST_MODEL, "c_ms": 10**400}}, "c_ms"),
        ({"log_interval_s": 10**400}, "log_interval_s"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_numbers_beyond_what_the_core_stores_name_the_key(values: dict, key: str) -> None:
    """Regression: 2**63 passed validation, then pybind11 raised a TypeError naming nothing."""
    with pytest.raises(ValueError, match=key):
        LampsConfig.load({"lamps": values}, environ={})


def test_largest_accepted_integers_reach_the_core() -> None:
    """The bounds are what the core stores: int64 iterations, token counts up to MAX_TOKENS."""
    import lamps
    from lamps.vllm import config as config_module

    cfg = LampsConfig.load(
        {
            "lamps": {
                "starvation_threshold": 2**63 - 1,
                "rescore_interval": 2**63 - 1,
                "default_output_tokens": lamps.MAX_TOKENS,
                "starvation_share": 2**63 - 1,
            }
        },
        environ={},
    )
    assert cfg.default_output_tokens == config_module._MAX_TOKENS == lamps.MAX_TOKENS
    assert lamps.RankingQueue(cfg.starvation_threshold).starvation_threshold == 2**63 - 1
    assert lamps.RankingQueue(1, cfg.starvation_share).promoted_share == 2**63 - 1


def test_saturation_tokens_is_refused_with_the_reason() -> None:
    """The per-step budget is the scheduler's: a cost model naming one is told so."""
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        LampsConfig(cost_model={**COST_MODEL, "saturation_tokens": 384})


def test_a_cost_model_that_cannot_score_is_refused_at_load() -> None:
    """Regression: c_ms=1e307 passed validation, then the first request failed in add_request."""
    huge = {
        "a_ms_per_token": 0.04,
        "c_ms": 1e307,
        "kv_bytes_per_token": 1e5,
        "link_bytes_per_second": 1e10,
    }
    with pytest.raises(ValueError, match=r"'cost_model': c_ms must be <="):
        LampsConfig.load({"lamps": {"cost_model": huge}}, environ={})


def test_bad_env_and_file_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LAMPS_RANKING"):
        LampsConfig.load({}, environ={"LAMPS_RANKING": "maybe"})
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="LAMPS_CONFIG"):
        LampsConfig.load({}, environ={"LAMPS_CONFIG": str(bad)})
    with pytest.raises(ValueError, match="unknown cost-model profile"):
        LampsConfig(profile="no-such").make_cost_model()


def test_explicit_cost_model() -> None:
    cm = LampsConfig(
        cost_model={
            "a_ms_per_token": 0.05,
            "c_ms": 10.0,
            "kv_bytes_per_token": 1e5,
            "link_bytes_per_second": 1e10,
        }
    ).make_cost_model()
    assert cm.a_ms_per_token == pytest.approx(0.05)
    assert cm.iteration_seconds(100) == pytest.approx((0.05 * 100 + 10) / 1000)


def test_hints_parse_valid_and_drop_invalid(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.hints")
    hints, warnings = parse_hints(
        {
            "lamps": {
                "tool": "search",
                "predicted_output_tokens": 12.0,
                "predicted_api_seconds": 0.5,
                "api_return_tokens": True,
            }
        },
        "r1",
        log,
    )
    assert hints == Hints("search", 12, 0.5, None)
    assert warnings == 1
    assert "r1" in caplog.text and "api_return_tokens" in caplog.text
    assert parse_hints(None, "r2", log) == (Hints(), 0)
    assert parse_hints({"other": 1}, "r3", log) == (Hints(), 0)


def test_api_predictor_learns_per_tool_with_prior() -> None:
    p = ApiDurationPredictor(prior=2.0, window=4)
    assert p.predict("calc") == 2.0
    for v in (1.0, 3.0):
        p.observe("calc", v)
    assert p.predict("calc") == pytest.approx(2.0)
    p.observe("search", 10.0)
    assert p.predict("search") == pytest.approx(10.0)
    assert p.predict(None) == pytest.approx(14.0 / 3)  # pooled
    for _ in range(50):
        p.observe("calc", 5.0)
    assert p.predict("calc") == pytest.approx(5.0, rel=1e-3)  # follows drift
    p.observe("calc", float("inf"))
    assert p.observations("calc") == 52


def test_predictor_memory_is_bounded() -> None:
    # One entry per distinct tool name, forever: 20,000 names cost ~90 MiB that never came back.
    p = ApiDurationPredictor(1.0, max_keys=100)
    for i in range(20_000):
        p.observe(f"tool-{i}", float(i % 7))
    assert p.num_keys <= 100
    assert p.predict("tool-19999") == pytest.approx(19_999 % 7)  # the most recent are kept
    assert p.observations() == 20_000


def test_overlong_tool_name_is_an_invalid_hint(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.hints")
    hints, warnings = parse_hints({"lamps": {"tool": "x" * 10_000}}, "r", log)
    assert hints.tool is None and warnings == 1
