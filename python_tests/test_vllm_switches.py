"""LampsConfig's switches as typed choices: one validation, strings and members alike, the
same spelling in JSON and logs; the replay's ablations and modes name members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamps.choices import Choice
from lamps.replay.ablations import ABLATIONS, STATELESS_ABLATIONS, plain
from lamps.replay.modes import API_MODES, ApiMode, EngineKind
from lamps.replay.policies import describe_policies, make_policy
from lamps.vllm import LampsConfig
from lamps.vllm.switches import (
    SWITCHES,
    Redecide,
    RunningOrder,
    ScoreHorizon,
    StarvationRule,
    SwapPolicy,
)

SWITCH_CASES = [(key, choice) for key, choice in SWITCHES.items()]


def test_the_switches_are_lampsconfigs_choice_valued_keys() -> None:
    expected = {
        "running_order": RunningOrder,
        "starvation_rule": StarvationRule,
        "score_horizon": ScoreHorizon,
        "redecide": Redecide,
        "swap_policy": SwapPolicy,
    }
    assert expected == SWITCHES
    cfg = LampsConfig()
    for key, choice in SWITCHES.items():
        assert isinstance(getattr(cfg, key), choice)
        assert all(m.description for m in choice), key  # each value says what it means


@pytest.mark.parametrize(("key", "choice"), SWITCH_CASES, ids=[k for k, _ in SWITCH_CASES])
def test_a_bad_value_names_the_key_the_value_and_the_allowed_values(
    key: str, choice: type[Choice]
) -> None:
    allowed = [m.value for m in choice]
    expected = f"lamps config '{key}' must be one of {allowed}, got 'bogus'"
    with pytest.raises(ValueError) as e:
        LampsConfig.load({"lamps": {key: "bogus"}}, environ={})
    assert str(e.value) == expected
    with pytest.raises(ValueError, match=key):  # not a string at all
        LampsConfig(**{key: 3})
    with pytest.raises(ValueError, match=key):  # unhashable: still a ValueError naming the key
        LampsConfig(**{key: ["score"]})


@pytest.mark.parametrize(("key", "choice"), SWITCH_CASES, ids=[k for k, _ in SWITCH_CASES])
def test_strings_and_members_are_accepted_and_stored_as_members(
    key: str, choice: type[Choice], tmp_path: Path
) -> None:
    path = tmp_path / "lamps.json"
    for member in choice:
        from_member = LampsConfig(**{key: member})
        from_string = LampsConfig.load({"lamps": {key: member.value}}, environ={})
        from_env = LampsConfig.load({}, environ={f"LAMPS_{key.upper()}": member.value})
        path.write_text(json.dumps({key: member.value}))
        from_file = LampsConfig.load({}, environ={"LAMPS_CONFIG": str(path)})
        for cfg in (from_member, from_string, from_env, from_file):
            assert getattr(cfg, key) is member
            assert cfg == from_member


def test_a_member_of_another_switch_is_refused() -> None:
    with pytest.raises(ValueError, match="'running_order' must be one of"):
        LampsConfig(running_order=StarvationRule.NONE)  # type: ignore[arg-type]


def test_members_spell_their_values_in_json_logs_and_format() -> None:
    cfg = LampsConfig(starvation_rule="iterations", swap_policy=SwapPolicy.BUDGETED)
    member = cfg.starvation_rule
    assert member == "iterations" and hash(member) == hash("iterations")
    assert str(member) == f"{member}" == f"{member:>10}".strip() == "iterations"
    assert json.dumps(member) == '"iterations"'
    plain_dict = cfg.as_dict()
    assert plain_dict["starvation_rule"] == "iterations"
    assert type(plain_dict["starvation_rule"]) is str  # the log line reads as before
    assert "<" not in repr(plain_dict)
    # Round trip: the JSON of a config loads back to the same config.
    text = json.dumps(plain_dict)
    assert json.loads(text)["swap_policy"] == "budgeted"
    assert LampsConfig.from_mapping(json.loads(text)) == cfg


def test_the_ablations_name_members_and_print_values() -> None:
    for switches, _ in [*ABLATIONS.values(), *STATELESS_ABLATIONS.values()]:
        for key, value in switches.items():
            if key in SWITCHES:
                assert isinstance(value, SWITCHES[key]), (key, value)
    demote = ABLATIONS["lamps-redecide-demote"][0]
    assert plain(demote) == {"redecide": "demote"}
    assert type(plain(demote)["redecide"]) is str
    assert "ablation, LAMPS with {'redecide': 'demote'}: " in describe_policies()
    # The config a replay policy hands vLLM serializes as a config file spells it.
    extra = make_policy("lamps-redecide-demote").additional_config()
    assert json.loads(json.dumps(extra))["lamps"]["redecide"] == "demote"


def test_the_replay_modes_are_members_spelled_as_before() -> None:
    assert API_MODES == (ApiMode.SESSION, ApiMode.STATELESS) == ("session", "stateless")
    assert make_policy("vllm").api_mode is ApiMode.STATELESS
    assert make_policy("lamps").api_mode is ApiMode.SESSION
    assert make_policy("lamps-stateless").api_mode is ApiMode.STATELESS
    assert EngineKind.values() == ["sim", "real"]
    assert ApiMode.parse("session", "--api-mode") is ApiMode.SESSION
    with pytest.raises(ValueError, match=r"--api-mode must be one of \['session', 'stateless'\]"):
        ApiMode.parse("stateful", "--api-mode")
