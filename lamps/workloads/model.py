"""The workload data model: request templates of segments, workloads, and timed arrivals.

A request is a list of segments: decode ``output_tokens``, then (except after the last one) an
external API call that lasts ``api_seconds`` and appends ``return_tokens`` to the context.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

KINDS = ("math", "qa", "virtual_env", "chat", "chat_image", "chat_tts")
"""The six augmentation types of the InferCept mixture."""


@dataclass(frozen=True)
class TraceSegment:
    """One decode phase of a request and the API call that follows it (if any)."""

    output_tokens: int
    api_seconds: float = 0.0
    return_tokens: int = 0
    has_api: bool = False


@dataclass(frozen=True)
class WorkloadRequest:
    """A request template: its first prompt and its segments."""

    request_id: str
    prompt_tokens: int
    segments: tuple[TraceSegment, ...]
    kind: str = "unknown"

    @property
    def num_api_calls(self) -> int:
        """Number of API calls (segments followed by a call)."""
        return sum(1 for s in self.segments if s.has_api)

    @property
    def output_tokens(self) -> int:
        """Tokens the engine generates over all segments."""
        return sum(s.output_tokens for s in self.segments)

    @property
    def api_seconds(self) -> float:
        """Total duration of the request's API calls."""
        return sum(s.api_seconds for s in self.segments if s.has_api)

    @property
    def return_tokens(self) -> int:
        """Tokens appended to the context by all API calls."""
        return sum(s.return_tokens for s in self.segments if s.has_api)

    @property
    def final_context_tokens(self) -> int:
        """Context length after the last generated token."""
        return self.prompt_tokens + self.output_tokens + self.return_tokens

    def context_before(self, segment_index: int) -> int:
        """Context length at the start of segment ``segment_index``."""
        ctx = self.prompt_tokens
        for s in self.segments[:segment_index]:
            ctx += s.output_tokens + (s.return_tokens if s.has_api else 0)
        return ctx


@dataclass(frozen=True)
class Workload:
    """A set of request templates that arrivals are sampled from."""

    name: str
    requests: tuple[WorkloadRequest, ...]

    def __post_init__(self) -> None:
        if not self.requests:
            raise ValueError(f"workload {self.name!r}: no requests")

    @property
    def max_context_tokens(self) -> int:
        """Longest context any request reaches."""
        return max(r.final_context_tokens for r in self.requests)

    def kind_counts(self) -> dict[str, int]:
        """Number of requests of each augmentation type."""
        return dict(Counter(r.kind for r in self.requests))


@dataclass(frozen=True)
class Arrival:
    """One request instance: a template arriving at a time."""

    index: int
    time: float
    request: WorkloadRequest

    @property
    def request_id(self) -> str:
        """Unique id of this instance (templates repeat when sampled with replacement)."""
        return f"r{self.index}"
