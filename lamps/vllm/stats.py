"""What the LAMPS scheduler did, as counters, and the periodic log line built from them."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

logger = logging.getLogger("vllm.lamps")


def _counter(label: str, help_text: str, scale: float = 1.0, fmt: str = "d") -> Any:
    return field(default=0, metadata={"label": label, "help": help_text, "scale": scale,
                                      "fmt": fmt})  # fmt: skip


@dataclass
class LampsStats:
    """Cumulative counters; each field's metadata names it in the log line and says what it is."""

    pauses: int = _counter("pauses", "API pauses seen (session turns that ended for input)")
    preserved: int = _counter("preserve", "pauses whose KV was kept on the GPU at first")
    discarded: int = _counter("discard", "discards applied (at a pause or by a re-decision)")
    swapped: int = _counter("swap", "swaps applied (at a pause or by a re-decision)")
    swap_fallbacks: int = _counter("swap_fallback", "swaps no swap path took: discarded")
    redecided: int = _counter("redecided", "preserved pauses re-decided after overrunning")
    resumed: int = _counter("resumed", "pauses ended by their next input")
    recomputed_tokens: int = _counter(
        "recomputed_tokens", "released context tokens computed again at resume"
    )
    prefix_hit_tokens: int = _counter(
        "prefix_hit_tokens", "released context tokens the prefix cache or a swap-in gave back"
    )
    promotions: int = _counter("promotions", "starvation promotions")
    ranking_seconds: float = _counter(
        "ranking_ms", "seconds of LAMPS bookkeeping before the steps", scale=1e3, fmt=".2f"
    )
    rescores: int = _counter("rescores", "full re-scores of the waiting queues")
    hint_warnings: int = _counter("hint_warnings", "invalid hint fields ignored")

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict copy."""
        return asdict(self)

    def copy(self) -> LampsStats:
        """A snapshot."""
        return LampsStats(**self.as_dict())

    def minus(self, earlier: LampsStats) -> LampsStats:
        """The counts since `earlier`."""
        return LampsStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name)
                             for f in fields(self)})  # fmt: skip

    def any_event(self) -> bool:
        """Whether any event was counted (the bookkeeping time is not an event)."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "ranking_seconds")

    def log_fields(self) -> str:
        """`label=value` for every counter, in field order."""
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
