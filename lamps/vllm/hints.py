"""Per-request LAMPS hints carried in SamplingParams.extra_args["lamps"]."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HINTS_KEY = "lamps"

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
    value = float(value)
    if not math.isfinite(value) or value < 0:
        return None
    if value > MAX_HINT_SECONDS:
        raise _OutOfRange(f"above {MAX_HINT_SECONDS:g}")
    return value


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "tool": _as_tool,
    "predicted_output_tokens": _as_count,
    "predicted_api_seconds": _as_seconds,
    "api_return_tokens": _as_count,
}


def parse_hints(
    extra_args: dict[str, Any] | None, request_id: str, logger: logging.Logger
) -> tuple[Hints, int]:
    """Read the hints; drop each invalid field with one warning. Returns (hints, warnings)."""
    if not extra_args or HINTS_KEY not in extra_args:
        return Hints(), 0
    raw = extra_args[HINTS_KEY]
    if not isinstance(raw, dict):
        logger.warning(
            "LAMPS: request %s: ignoring extra_args['%s'] (expected an object, got %s)",
            request_id,
            HINTS_KEY,
            type(raw).__name__,
        )
        return Hints(), 1
    values: dict[str, Any] = {}
    warnings = 0
    for key, value in raw.items():
        parse = _FIELDS.get(key)
        reason = "unknown field" if parse is None else "invalid value"
        try:
            parsed = parse(value) if parse is not None else None
        except _OutOfRange as e:
            parsed, reason = None, f"out of range: {e}"
        if parsed is None:
            logger.warning(
                "LAMPS: request %s: ignoring hint '%s' = %r (%s)", request_id, key, value, reason
            )
            warnings += 1
            continue
        values[key] = parsed
    return Hints(**values), warnings
