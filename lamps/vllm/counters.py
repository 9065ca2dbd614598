"""What the LAMPS scheduler did, as counters and gauges, and the periodic log line built from them.

Every field of `LampsStats` carries its own description in its metadata: the label used in the
log line, a help text, whether it is a counter (cumulative) or a gauge (a current value), and
the Prometheus series it is published as (`lamps.vllm.prometheus`), optionally with a label that
splits one series by strategy.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

logger = logging.getLogger("vllm.lamps")

COUNTER = "counter"
GAUGE = "gauge"


def _stat(
    label: str,
    help_text: str,
    *,
    kind: str = COUNTER,
    scale: float = 1.0,
    fmt: str = "d",
    series: str | None = None,
    strategy: str | None = None,
) -> Any:
    metadata = {"label": label, "help": help_text, "kind": kind, "scale": scale, "fmt": fmt,
                "series": series or f"lamps_{label}", "strategy": strategy}  # fmt: skip
    return field(default=0, metadata=metadata)


def _gauge(label: str, help_text: str, **kwargs: Any) -> Any:
    return _stat(label, help_text, kind=GAUGE, **kwargs)


@dataclass
class LampsStats:
    """Counters (cumulative) and gauges (current values) of one LAMPS scheduler."""

    pauses: int = _stat("pauses", "API pauses seen (session turns that ended for input)")
    preserved: int = _stat("preserve", "pauses whose KV was kept on the GPU at first",
                           series="lamps_pause_decisions", strategy="preserve")  # fmt: skip
    discarded: int = _stat("discard", "discards applied (at a pause or by a re-decision)",
                           series="lamps_pause_decisions", strategy="discard")  # fmt: skip
    swapped: int = _stat("swap", "swaps applied (at a pause or by a re-decision)",
                         series="lamps_pause_decisions", strategy="swap")  # fmt: skip
    swap_fallbacks: int = _stat("swap_fallback", "swaps no swap path took: discarded")
    redecided: int = _stat("redecided", "preserved pauses re-decided after overrunning")
    resumed: int = _stat("resumed", "pauses ended by their next input")
    paused_pressure_releases: int = _stat(
        "paused_pressure_releases",
        "preserved pauses discarded because an allocation lacked free blocks",
    )
    recomputed_tokens: int = _stat(
        "recomputed_tokens", "released context tokens computed again at resume"
    )
    prefix_hit_tokens: int = _stat(
        "prefix_hit_tokens", "released context tokens the prefix cache or a swap-in gave back"
    )
    # Sessions across stateless turns (lamps.vllm.sessions).
    session_turns: int = _stat("session_turns", "finished requests that carried a session id")
    session_preserved: int = _stat(
        "session_preserve", "session turns parked with their KV blocks pinned",
        series="lamps_session_parks", strategy="preserve",
    )  # fmt: skip
    session_discarded: int = _stat(
        "session_discard", "session turns left to vLLM's evictable prefix cache",
        series="lamps_session_parks", strategy="discard",
    )  # fmt: skip
    session_swapped: int = _stat(
        "session_swap", "session turns copied to host memory through the swap connector",
        series="lamps_session_parks", strategy="swap",
    )  # fmt: skip
    takeovers: int = _stat("takeovers", "parked turns taken over by their session's next request")
    parked_tokens: int = _stat(
        "parked_tokens", "tokens in the full KV blocks of parked turns that were taken over"
    )
    recovered_tokens: int = _stat(
        "recovered_tokens",
        "of those, tokens the next request found cached (pinned, prefix cache or swap-in)",
    )
    session_redecided: int = _stat(
        "session_redecided",
        "parked turns whose strategy a re-decision changed (an overrun gap, a changed load)",
    )
    pressure_releases: int = _stat(
        "pressure_releases", "pinned turns given back because an allocation lacked free blocks"
    )
    cap_releases: int = _stat(
        "cap_releases", "pinned turns given back at the hard cap or the parked-memory bound"
    )
    sessions_ended: int = _stat(
        "sessions_ended", "sessions ended by a hint, an abort or the idle timeout"
    )
    swapped_bytes: int = _stat(
        "swapped_bytes", "KV bytes handed to a swap path (pauses, turns; cost model's bytes/token)"
    )
    promotions: int = _stat("promotions", "starvation promotions")
    ranking_seconds: float = _stat(
        "ranking_ms", "seconds of LAMPS bookkeeping before the steps", scale=1e3, fmt=".2f",
        series="lamps_ranking_seconds",
    )  # fmt: skip
    rescores: int = _stat("rescores", "full re-scores of the waiting queues")
    hinted_requests: int = _stat("hinted", "requests that carried at least one valid hint")
    hint_warnings: int = _stat("hint_warnings", "invalid hint fields ignored")
    # Gauges.
    parked_preserve: int = _gauge("parked_preserve", "session turns parked with pinned blocks",
                                  series="lamps_parked_sessions", strategy="preserve")  # fmt: skip
    parked_discard: int = _gauge(
        "parked_discard", "session turns parked in the evictable prefix cache",
        series="lamps_parked_sessions", strategy="discard",
    )  # fmt: skip
    parked_swap: int = _gauge("parked_swap", "session turns parked in host memory",
                              series="lamps_parked_sessions", strategy="swap")  # fmt: skip
    parked_blocks: int = _gauge("parked_blocks", "KV blocks pinned for parked session turns")
    sessions: int = _gauge("sessions", "sessions LAMPS keeps state for")
    # The engine's load as LAMPS sees it, for routers that place new sessions
    # (docs/many-engines.md).
    parked_kv_preserve: int = _gauge(
        "parked_kv_preserve", "tokens of parked turns pinned on the GPU (in kv_cache_usage)",
        series="lamps_parked_kv_tokens", strategy="preserve",
    )  # fmt: skip
    parked_kv_discard: int = _gauge(
        "parked_kv_discard", "tokens of parked turns left to the evictable prefix cache "
        "(some may be evicted already; not in kv_cache_usage)",
        series="lamps_parked_kv_tokens", strategy="discard",
    )  # fmt: skip
    parked_kv_swap: int = _gauge(
        "parked_kv_swap", "tokens of parked turns copied to host memory",
        series="lamps_parked_kv_tokens", strategy="swap",
    )  # fmt: skip
    pinned_blocks: int = _gauge(
        "pinned_blocks",
        "KV blocks LAMPS pins (parked turns, heads of partial swaps); in kv_cache_usage",
    )
    queued_requests: int = _gauge(
        "queued_requests", "requests ranked in the waiting queues, ready to be scheduled"
    )
    paused_requests: int = _gauge(
        "paused_requests",
        "streaming sessions paused for their next input (vLLM counts them as waiting)",
    )
    memory_over_time: int = _gauge(
        "memory_over_time",
        "KV token-seconds the engine is predicted to hold for the requests and turns it has: "
        "the LAMPS scores of running and queued requests, plus kept KV of parked turns and "
        "paused sessions times the rest of their predicted gap",
        series="lamps_memory_over_time_token_seconds",
    )

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict copy."""
        return asdict(self)

    def copy(self) -> LampsStats:
        """A snapshot."""
        return LampsStats(**self.as_dict())

    def minus(self, earlier: LampsStats) -> LampsStats:
        """The counts since `earlier` (gauges keep their current value)."""
        return LampsStats(**{
            f.name: getattr(self, f.name) - (getattr(earlier, f.name)
                                             if f.metadata["kind"] == COUNTER else 0)
            for f in fields(self)
        })  # fmt: skip

    def any_event(self) -> bool:
        """Whether any event was counted (bookkeeping time and gauges are no events)."""
        return any(
            getattr(self, f.name)
            for f in fields(self)
            if f.metadata["kind"] == COUNTER and f.name != "ranking_seconds"
        )

    def log_fields(self) -> str:
        """`label=value` for every counter and gauge, in field order."""
        cells = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["scale"] != 1.0:
                value *= f.metadata["scale"]
            cells.append(f"{f.metadata['label']}={value:{f.metadata['fmt']}}")
        return " ".join(cells)


class StatsLog:
    """Logs the counters' change every `interval_s` (0 = never), and once more at shutdown."""

    def __init__(self, stats: LampsStats, interval_s: float, now: float) -> None:
        self._stats = stats
        self.interval_s = interval_s
        self._last_at = now
        self._logged = stats.copy()

    def restart(self, now: float) -> None:
        """Count the interval from `now` (the clock was replaced)."""
        self._last_at = now

    def maybe_log(self, now: float, queues: str, force: bool = False) -> None:
        """Log `queues` and the counts since the last line, when the interval has passed."""
        if not force and (self.interval_s <= 0 or now - self._last_at < self.interval_s):
            return
        self._last_at = now
        delta = self._stats.minus(self._logged)
        if not delta.any_event():
            return
        self._logged = self._stats.copy()
        logger.info("LAMPS: %s | %s", queues, delta.log_fields())
