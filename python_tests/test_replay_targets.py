"""The targets table: best baseline by knee, per-seed paired ratios, verdicts on intervals."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lamps.replay.targets import evaluate, format_targets


def _row(policy: str, qps: float, seed: int, e2e: float, ttft_p99: float) -> dict[str, Any]:
    return {
        "policy": policy,
        "qps": qps,
        "seed": seed,
        "steady_e2e_mean": e2e,
        "steady_e2e_p99": 3 * e2e,
        "steady_ttft_mean": ttft_p99 / 4,
        "steady_ttft_p99": ttft_p99,
        "steady_normalized_latency_mean": e2e / 1000,
    }


def _rows(lamps_factor: float) -> list[dict[str, Any]]:
    rows = []
    for seed in range(5):
        jitter = 1 + 0.01 * seed
        for qps in (2.0, 3.0, 4.0):
            # vllm saturates after 2, infercept after 3, lamps after 4.
            rows.append(_row("vllm", qps, seed, 50 * jitter, 1.0 if qps <= 2 else 40.0))
            rows.append(_row("infercept", qps, seed, 50 * jitter, 1.0 if qps <= 3 else 40.0))
            rows.append(_row("lamps", qps, seed, 50 * jitter * lamps_factor, 0.6))
            rows.append(_row("lamps-oracle", qps, seed, 50 * jitter * lamps_factor / 1.05, 0.5))
    return rows


def test_best_baseline_is_the_highest_knee_and_verdicts_need_the_whole_interval() -> None:
    best, at, verdicts = evaluate(_rows(0.7))
    assert (best, at) == ("infercept", 3.0)
    by_name = {v.name.split(" /")[0]: v for v in verdicts}
    assert by_name["mean e2e"].measured.mean == pytest.approx(0.7)
    assert by_name["mean e2e"].met
    assert by_name["mean TTFT"].measured.mean == pytest.approx(0.6)
    assert not by_name["mean TTFT"].met
    knee = next(v for v in verdicts if v.name.startswith("knee"))
    assert knee.measured.mean == pytest.approx(4 / 3) and knee.met
    noise = next(v for v in verdicts if v.name.startswith("noise"))
    assert noise.measured.mean == pytest.approx(0.05) and noise.met


def test_a_loss_is_reported_as_not_met() -> None:
    _, _, verdicts = evaluate(_rows(1.2))
    assert not verdicts[0].met and math.isclose(verdicts[0].measured.mean, 1.2)
    assert "NOT met" in format_targets(_rows(1.2))


def test_no_baseline_within_the_slo_is_an_error() -> None:
    rows = [r for r in _rows(1.0) if r["policy"] == "lamps"]
    with pytest.raises(ValueError, match="no baseline"):
        evaluate(rows)


def test_paired_table_puts_the_reference_first_with_ratios() -> None:
    from lamps.replay.targets import format_paired

    table = format_paired(_rows(0.7), 3.0, reference="lamps")
    lines = table.splitlines()
    assert lines[2].startswith("| `lamps` |")
    infercept = next(line for line in lines if line.startswith("| `infercept` |"))
    assert "1.43 ± 0.00" in infercept  # 50 / 35 on every seed
    with pytest.raises(ValueError, match="no 'nobody' rows"):
        format_paired(_rows(0.7), 3.0, reference="nobody")
