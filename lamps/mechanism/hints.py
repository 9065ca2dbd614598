"""Per-request LAMPS hints: one schema, read in two spellings.

`SCHEMA` defines every hint once (its name, type, bounds and meaning). A request carries hints
in either spelling, both read from `SamplingParams.extra_args`:
- nested, from Python: `extra_args={"lamps": {"tool": "search", ...}}` (a JSON-encoded object
  string is accepted too);
- flat, from vLLM's OpenAI server, whose `vllm_xargs` body field accepts only string, number
  or list values: `"vllm_xargs": {"lamps_tool": "search", "lamps_predicted_api_seconds": 2}`.
Both may be given; a flat key overrides the same nested field. Each invalid field is dropped
with one warning naming the request and the field; a request is never refused for its hints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HINTS_KEY = "lamps"
"""The nested spelling's key in `extra_args`."""
FLAT_PREFIX = "lamps_"
"""The flat spelling's key prefix in `extra_args` / `vllm_xargs`."""

# Upper bounds of valid hints. Token counts go into int64 score columns and are summed with
# context lengths; seconds multiply token counts in token-second scores. Anything larger is no
# prediction anybody means, and would overflow a column or make a score infinite.
MAX_HINT_TOKENS = 1 << 40
MAX_HINT_SECONDS = 1e9
MAX_TOOL_NAME_CHARS = 256


class _OutOfRange(ValueError):
    """A hint of the right type beyond its upper bound."""


@dataclass(frozen=True)
class Hints:
    """What the client told us about a request's next segment; None = unknown."""

    tool: str | None = None
    predicted_output_tokens: int | None = None
    predicted_api_seconds: float | None = None
    api_return_tokens: int | None = None
    session_end: bool | None = None
    remaining_calls: int | None = None

    def any(self) -> bool:
        """Whether any hint was given."""
        return any(getattr(self, f.name) is not None for f in SCHEMA)


def _as_tool(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_TOOL_NAME_CHARS:
        raise _OutOfRange(f"longer than {MAX_TOOL_NAME_CHARS} characters")
    return value


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return None
        if value > MAX_HINT_TOKENS:
            raise _OutOfRange(f"above {MAX_HINT_TOKENS}")
        value = int(value)
    if not isinstance(value, int) or value < 0:
        return None
    if value > MAX_HINT_TOKENS:
        raise _OutOfRange(f"above {MAX_HINT_TOKENS}")
    return value


def _as_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and value > MAX_HINT_SECONDS:
        raise _OutOfRange(f"above {MAX_HINT_SECONDS:g}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds > MAX_HINT_SECONDS:
        raise _OutOfRange(f"above {MAX_HINT_SECONDS:g}")
    return seconds


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _as_flag(value: Any) -> bool | None:
    # JSON true/false, 1/0 (vllm_xargs has no boolean type) or their strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


@dataclass(frozen=True)
class HintField:
    """One hint: its name (a `Hints` field), parser, type and meaning."""

    name: str
    parse: Callable[[Any], Any]
    type_name: str
    meaning: str

    @property
    def flat_key(self) -> str:
        """Its key in the flat spelling (`vllm_xargs`)."""
        return FLAT_PREFIX + self.name


SCHEMA: tuple[HintField, ...] = (
    HintField("tool", _as_tool, "str",
              "the tool/API called after this turn (durations are learned per tool)"),
    HintField("predicted_output_tokens", _as_count, "int",
              "tokens until the next API call or the end"),
    HintField("predicted_api_seconds", _as_seconds, "float",
              "expected duration of that API call (the gap until the session's next request)"),
    HintField("api_return_tokens", _as_count, "int", "tokens the API result will append"),
    HintField("session_end", _as_flag, "bool (or 1/0)",
              "this is the session's last request: free what LAMPS keeps for it when it ends"),
    HintField("remaining_calls", _as_count, "int",
              "API calls expected after that one (else learned from finished requests)"),
)  # fmt: skip
_BY_NAME = {f.name: f for f in SCHEMA}


def as_vllm_xargs(**hints: Any) -> dict[str, Any]:
    """The flat spelling of the given hints, for `vllm_xargs` (ValueError on an unknown name)."""
    unknown = sorted(set(hints) - set(_BY_NAME))
    if unknown:
        raise ValueError(f"unknown LAMPS hint(s) {unknown}; known: {list(_BY_NAME)}")
    return {_BY_NAME[k].flat_key: v for k, v in hints.items() if v is not None}


def parse_hints(
    extra_args: Mapping[str, Any] | None, request_id: str, logger: logging.Logger
) -> tuple[Hints, int]:
    """Read the hints of both spellings; drop each invalid field with one warning.

    Returns (hints, number of warnings).
    """
    if not extra_args:
        return Hints(), 0
    raw: list[tuple[str, str, Any]] = []  # (field name or None, key as written, value)
    warnings = 0
    if HINTS_KEY in extra_args:
        nested = extra_args[HINTS_KEY]
        if isinstance(nested, str):
            with contextlib.suppress(json.JSONDecodeError):
                nested = json.loads(nested)
        if isinstance(nested, Mapping):
            raw += [(str(k), str(k), v) for k, v in nested.items()]
        else:
            logger.warning(
                "LAMPS: request %s: ignoring extra_args['%s'] (expected an object, got %s)",
                request_id, HINTS_KEY, type(nested).__name__,
            )  # fmt: skip
            warnings += 1
    for key, value in extra_args.items():
        if isinstance(key, str) and key.startswith(FLAT_PREFIX):
            raw.append((key[len(FLAT_PREFIX) :], key, value))
    values: dict[str, Any] = {}
    for name, written, value in raw:
        field = _BY_NAME.get(name)
        reason = "unknown field" if field is None else "invalid value"
        try:
            parsed = field.parse(value) if field is not None else None
        except _OutOfRange as e:
            parsed, reason = None, f"out of range: {e}"
        if parsed is None:
            logger.warning(
                "LAMPS: request %s: ignoring hint '%s' = %r (%s)",
                request_id, written, value, reason,
            )  # fmt: skip
            warnings += 1
            continue
        values[name] = parsed
    return Hints(**values), warnings
