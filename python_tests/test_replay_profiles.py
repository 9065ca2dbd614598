"""One registry of cost models (the C++ core's): the replay's GPU profiles and InferCept's
constants name its profiles; one default profile; the replay CLI's defaults are ReplayConfig's."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from lamps import CostModel
from lamps.baselines.infercept import constants_from_config
from lamps.baselines.infercept_model import CONSTANTS
from lamps.defaults import DEFAULT_PROFILE
from lamps.replay.command import add_replay_parser
from lamps.replay.options import JOBS, QUICK_SEEDS, STOP_PAST
from lamps.replay.profiles import EIGHT_H100_80GB, PROFILES, get_profile
from lamps.replay.runner import ReplayConfig
from lamps.vllm import LampsConfig

COST_FIELDS = (
    "a_ms_per_token",
    "c_ms",
    "kv_bytes_per_token",
    "link_bytes_per_second",
    "prefill_ms_per_token_pair",
    "kv_read_ms_per_token",
)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_replay_profile_names_a_core_cost_model_that_resolves(name: str) -> None:
    profile = PROFILES[name]
    assert isinstance(profile.cost_model, str)
    assert profile.cost_model in CostModel.profiles()
    cost = profile.cost()
    assert cost.name == profile.cost_model
    assert cost.kv_bytes_per_token == profile.kv_bytes_per_token
    # What the schedulers are configured with resolves to the same model.
    config = profile.scheduler_cost_config()
    assert config == {"profile": profile.cost_model}
    lamps_cost = LampsConfig(**config).make_cost_model()
    assert [getattr(lamps_cost, f) for f in COST_FIELDS] == [getattr(cost, f) for f in COST_FIELDS]
    constants_from_config(dict(config))  # InferCept's: its own, or the core's iteration fit


def test_infercepts_constants_are_keyed_by_core_profiles() -> None:
    assert set(CONSTANTS) <= set(CostModel.profiles())
    # Where the core's fit is InferCept's own, the two agree.
    for name in ("infercept-gptj-6b-a100", "vicuna-13b-2xa100"):
        cost = CostModel.profile(name)
        assert (CONSTANTS[name].f_a_ms, CONSTANTS[name].f_c_ms) == (cost.a_ms_per_token, cost.c_ms)


def test_the_70b_cost_model_is_the_engine_derivation_it_was_in_python() -> None:
    """The coefficients moved from lamps/replay/profiles.py into the core bit for bit."""
    hw = EIGHT_H100_80GB
    was = {
        "a_ms_per_token": 0.0352,
        "c_ms": 14.86,
        "kv_bytes_per_token": 327_680.0,
        "link_bytes_per_second": hw.link_bytes_per_second,
        "prefill_ms_per_token_pair": hw.prefill_ms_per_token_pair * 80 * 8192 / 4096,
        "kv_read_ms_per_token": 1e3 * 327_680 / (hw.hbm_bytes_per_second * hw.kv_read_efficiency),
    }
    cost = get_profile("llama31-70b-8xh100").cost()
    assert {f: getattr(cost, f) for f in COST_FIELDS} == was


def test_one_default_profile() -> None:
    assert DEFAULT_PROFILE in CostModel.profiles() and DEFAULT_PROFILE in PROFILES
    assert LampsConfig().profile == ReplayConfig().profile == DEFAULT_PROFILE
    assert constants_from_config({}) == CONSTANTS[DEFAULT_PROFILE]


def _replay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["replay", *argv])


def test_the_replay_options_default_to_replayconfigs() -> None:
    args = _replay_args()
    library = ReplayConfig()
    for option, field in [
        ("warmup", "warmup"),
        ("cutoff", "cutoff"),
        ("drain", "drain"),
        ("noise", "noise"),
        ("hidden_fraction", "hidden_fraction"),
        ("warm_prefix", "warm_prefix"),
        ("engines", "engines"),
        ("engine_settings", "engine"),
    ]:
        assert getattr(args, option) == getattr(library, field), option
    assert (args.stop_past, args.jobs, args.engine) == (STOP_PAST, JOBS, "sim")
    # --qps, --duration, --seeds and --policies say None: run_replay fills them in.
    assert (args.qps, args.duration, args.seeds, args.policies) == (None, None, None, None)
    defaults = {f.name: f.default for f in dataclasses.fields(ReplayConfig)}
    assert (defaults["qps"], defaults["duration"], QUICK_SEEDS) == ((4.0,), 300.0, (0, 1))
