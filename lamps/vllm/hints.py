"""Per-request LAMPS hints carried in SamplingParams.extra_args["lamps"]."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HINTS_KEY = "lamps"


@dataclass(frozen=True)
class Hints:
    """What the client told us about a request's next segment; None = unknown."""

    tool: str | None = None
    predicted_output_tokens: int | None = None
    predicted_api_seconds: float | None = None
    api_return_tokens: int | None = None


def _as_tool(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _as_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


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
            request_id, HINTS_KEY, type(raw).__name__,
        )
        return Hints(), 1
    values: dict[str, Any] = {}
    warnings = 0
    for key, value in raw.items():
        parse = _FIELDS.get(key)
        parsed = parse(value) if parse is not None else None
        if parsed is None:
            reason = "unknown field" if parse is None else "invalid value"
            logger.warning(
                "LAMPS: request %s: ignoring hint '%s' = %r (%s)", request_id, key, value, reason
            )
            warnings += 1
            continue
        values[key] = parsed
    return Hints(**values), warnings
