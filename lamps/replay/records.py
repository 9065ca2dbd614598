"""What a replay records: one record per arrival (and per turn), the run's result, KV usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamps.workloads import Arrival

if TYPE_CHECKING:  # records are also kept where vLLM is not installed (``lamps agents``)
    from vllm.v1.request import Request


@dataclass
class TurnRecord:
    """One turn (segment) of an arrival: when it was sent, served, and how its input was got.

    ``computed``: tokens the engine computed for the turn before its first token (its prefill,
    recomputation included); ``cached``: input tokens found in the GPU prefix cache (vLLM's own
    count where the request reports one, else those the turn's session already held);
    ``loaded``: input tokens a KV connector loaded instead of recomputing them."""

    segment: int
    sent: float
    input_tokens: int
    first_token: float | None = None
    finish: float | None = None
    computed: int = 0
    cached: int | None = None
    loaded: int = 0


@dataclass
class RequestRecord:
    """What happened to one arrival during a replay."""

    arrival: Arrival
    segment: int = 0
    segment_tokens: int = 0
    output_tokens: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    api_seconds: float = 0.0
    service_seconds: float = 0.0
    scheduled_tokens: int = 0
    preemptions: int = 0
    vllm_request: Request | None = None
    api_calls: list[tuple[float, float]] = field(default_factory=list)
    tokens_at_window: int | None = None  # output tokens when the steady window ended
    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether the last segment has produced its last token."""
        return self.finish_time is not None

    def api_seconds_until(self, t: float) -> float:
        """Seconds of API calls that elapsed before ``t`` (calls cut at ``t``)."""
        return sum(max(0.0, min(end, t) - start) for start, end in self.api_calls)


@dataclass
class RunResult:
    """Records and time series of one (policy, arrivals) replay."""

    policy: str
    records: list[RequestRecord]
    kv_usage: list[tuple[float, float]]
    iterations: int
    virtual_seconds: float
    wall_seconds: float
    policy_stats: dict[str, Any] = field(default_factory=dict)
    stopped_at: float | None = None
    engine_stats: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # engine settings it ran with


class KvUsageSeries:
    """KV-cache usage averaged over fixed virtual-time bins."""

    def __init__(self, bin_seconds: float) -> None:
        self.bin_seconds = bin_seconds
        self.points: list[tuple[float, float]] = []
        self._bin = 0
        self._sum = 0.0
        self._n = 0

    def add(self, t: float, usage: float) -> None:
        """Records the usage observed at virtual time ``t``."""
        b = int(t // self.bin_seconds)
        if b != self._bin and self._n:
            self.points.append(((self._bin + 0.5) * self.bin_seconds, self._sum / self._n))
            self._sum, self._n = 0.0, 0
        self._bin = b
        self._sum += usage
        self._n += 1

    def close(self) -> list[tuple[float, float]]:
        """Flushes the last bin and returns the series."""
        if self._n:
            self.points.append(((self._bin + 0.5) * self.bin_seconds, self._sum / self._n))
            self._n = 0
        return self.points
