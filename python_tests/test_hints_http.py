"""LAMPS hints in both spellings: nested from Python, flat through vLLM's OpenAI `vllm_xargs`."""

from __future__ import annotations

import dataclasses
import logging

import pydantic
import pytest

from lamps.mechanism.hints import FLAT_PREFIX, SCHEMA, Hints, as_vllm_xargs, parse_hints

LOG = logging.getLogger("test.hints")


def test_schema_is_the_one_definition_of_the_hints() -> None:
    assert [f.name for f in SCHEMA] == [f.name for f in dataclasses.fields(Hints)]
    assert all(f.flat_key == FLAT_PREFIX + f.name for f in SCHEMA)


def test_flat_keys_are_read() -> None:
    xargs = {"lamps_tool": "search", "lamps_predicted_output_tokens": 12,
             "lamps_predicted_api_seconds": 0.5, "lamps_api_return_tokens": 40,
             "lamps_session_end": 1, "session_id": "not ours", "other_ext": "x"}  # fmt: skip
    assert parse_hints(xargs, "r", LOG) == (Hints("search", 12, 0.5, 40, True), 0)


def test_flat_key_overrides_the_nested_field_and_both_merge() -> None:
    extra = {"lamps": {"tool": "a", "api_return_tokens": 3}, "lamps_tool": "b"}
    assert parse_hints(extra, "r", LOG) == (Hints(tool="b", api_return_tokens=3), 0)


def test_nested_json_string_is_read() -> None:
    extra = {"lamps": '{"tool": "calc", "predicted_api_seconds": 2}'}
    assert parse_hints(extra, "r", LOG) == (Hints(tool="calc", predicted_api_seconds=2.0), 0)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), ("true", True), ("no", False),
])  # fmt: skip
def test_session_end_flag_spellings(value: object, expected: bool) -> None:
    assert parse_hints({"lamps_session_end": value}, "r", LOG)[0].session_end is expected


def test_invalid_flat_values_warn_once_per_field_naming_request_and_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    extra = {"lamps_predicted_api_seconds": "soon", "lamps_session_end": "maybe",
             "lamps_colour": "red", "lamps_tool": "ok"}  # fmt: skip
    hints, warnings = parse_hints(extra, "req-7", LOG)
    assert hints == Hints(tool="ok")
    assert warnings == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 3
    for key in ("lamps_predicted_api_seconds", "lamps_session_end", "lamps_colour"):
        assert sum(key in m and "req-7" in m for m in messages) == 1, key


def test_as_vllm_xargs_spells_the_flat_form() -> None:
    assert as_vllm_xargs(tool="t", predicted_api_seconds=1.5, session_end=None) == {
        "lamps_tool": "t", "lamps_predicted_api_seconds": 1.5}  # fmt: skip
    with pytest.raises(ValueError, match="unknown LAMPS hint"):
        as_vllm_xargs(colour="red")


def test_vllm_openai_request_accepts_the_flat_form_and_rejects_the_nested_one() -> None:
    # The README used to document the nested form, which vLLM's server answers with HTTP 400.
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    flat = as_vllm_xargs(tool="search", predicted_output_tokens=8, predicted_api_seconds=0.25,
                         api_return_tokens=30, session_end=True)  # fmt: skip
    request = CompletionRequest(model="m", prompt="hi", vllm_xargs=flat)
    params = request.to_sampling_params(max_tokens=16)
    assert parse_hints(params.extra_args, "r", LOG) == (Hints("search", 8, 0.25, 30, True), 0)
    with pytest.raises(pydantic.ValidationError):
        CompletionRequest(model="m", prompt="hi", vllm_xargs={"lamps": {"tool": "search"}})
