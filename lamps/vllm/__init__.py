"""LAMPS as a vLLM scheduler plug-in: `--scheduler-cls lamps.vllm.LampsScheduler`.

Public surface (stable; see README "Using LAMPS with vLLM"):
- `LampsScheduler` (AsyncScheduler subclass) and `LampsSyncScheduler` (Scheduler subclass).
- `LampsConfig`: settings from `additional_config={"lamps": {...}}`, `LAMPS_*` env vars or
  `LAMPS_CONFIG=file.json`.
- `LampsStats`: counters, read from `scheduler.lamps_stats`.
- `Hints` / `HINTS_KEY`: per-request hints in `SamplingParams.extra_args["lamps"]`, or flat
  `lamps_<name>` keys (vLLM's OpenAI `vllm_xargs`); the schema is `lamps.mechanism.hints.SCHEMA`.
- HTTP sessions: requests with vLLM's `session_id` park their turn between requests
  (`lamps.vllm.sessions`, `scheduler.lamps_sessions`).
- `lamps.vllm.prometheus.LampsStatLogger`: the counters on vLLM's `/metrics` (a
  `vllm.stat_logger_plugins` entry point).
- `scheduler.set_clock(fn)`: clock for pause durations (the replay harness's virtual clock).
"""

from typing import TYPE_CHECKING, Any

from lamps.mechanism.hints import HINTS_KEY, Hints
from lamps.vllm.config import LampsConfig

if TYPE_CHECKING:
    from lamps.vllm.counters import LampsStats
    from lamps.vllm.scheduler import LampsScheduler, LampsSyncScheduler

_SCHEDULER_NAMES = ("LampsScheduler", "LampsStats", "LampsSyncScheduler")


def __getattr__(name: str) -> Any:
    """The scheduler classes, imported on first use: they need vLLM, and the hints and the
    config do not (``lamps agents`` sends hints from a machine without vLLM)."""
    if name in _SCHEDULER_NAMES:
        from lamps.vllm import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HINTS_KEY",
    "Hints",
    "LampsConfig",
    "LampsScheduler",
    "LampsStats",
    "LampsSyncScheduler",
]
