"""How LAMPS' counts cross from vLLM's engine-core process to its stat loggers.

LAMPS' counters travel from the engine-core process to the front end inside vLLM's own
SchedulerStats (the only per-step channel from a scheduler to the stat loggers). vLLM decodes
it into its declared type, so a subclass's extra fields would be dropped; its one typed mapping
of counts that vLLM's loggers read by known keys only is `num_kv_fetch_reqs_by_stage`
(dict[str, int]). LAMPS' counts ride there under keys with `STATS_KEY_PREFIX`; LAMPS' stat
logger (a `vllm.stat_logger_plugins` entry, called before vLLM's own loggers) takes them out.
"""

from __future__ import annotations

from typing import Any

STATS_KEY_PREFIX = "lamps:"


def attach_stats_payload(scheduler_stats: Any, payload: dict[str, int]) -> None:
    """Put LAMPS' counts (integers) into a SchedulerStats."""
    carrier = scheduler_stats.num_kv_fetch_reqs_by_stage
    for key, value in payload.items():
        carrier[STATS_KEY_PREFIX + key] = int(value)


def take_stats_payload(scheduler_stats: Any) -> dict[str, int] | None:
    """Remove and return LAMPS' counts from a SchedulerStats (None when it carries none)."""
    carrier = scheduler_stats.num_kv_fetch_reqs_by_stage
    keys = [k for k in carrier if k.startswith(STATS_KEY_PREFIX)]
    if not keys:
        return None
    return {k[len(STATS_KEY_PREFIX) :]: carrier.pop(k) for k in keys}
