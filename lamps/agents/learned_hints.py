"""The LAMPS hints a client can give: learned online from the turns it has seen, never taken
from the trace's future.

Per tool name (every traced turn is a ``coding`` turn, the name the replay gives LAMPS): the mean
number of tokens the server generated for the turns answered so far (``predicted_output_tokens``)
and the mean time the client waited between an answer and its conversation's next request
(``predicted_api_seconds``: a tool's run and a person's time alike, since before an answer a
client cannot tell which will follow; a parent's wait for its sub-agents included). A hint not
yet observed is left out, and LAMPS uses what it has learned itself. The last turn of a
conversation carries ``session_end``, and no gap (nothing follows it). Spelled for
``vllm_xargs`` by ``lamps.mechanism.hints.as_vllm_xargs``, the schema's one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamps.mechanism.hints import as_vllm_xargs


@dataclass
class RunningMean:
    """The mean of the values added so far (None before the first)."""

    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        """Adds one observation."""
        self.total += value
        self.count += 1

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class LearnedHints:
    """Per tool: the outputs and gaps observed so far, as the next request's hints."""

    def __init__(self) -> None:
        self._outputs: dict[str, RunningMean] = {}
        self._gaps: dict[str, RunningMean] = {}

    def observe_output(self, tool: str, tokens: int) -> None:
        """A turn of ``tool`` was answered with ``tokens`` generated tokens."""
        self._outputs.setdefault(tool, RunningMean()).add(tokens)

    def observe_gap(self, tool: str, seconds: float) -> None:
        """The client waited ``seconds`` between a ``tool`` turn's answer and the next request."""
        self._gaps.setdefault(tool, RunningMean()).add(seconds)

    def xargs(self, tool: str, *, last: bool) -> dict[str, Any]:
        """The ``vllm_xargs`` of a ``tool`` turn (``last``: its conversation's last turn)."""
        output = self._outputs.get(tool, RunningMean()).mean
        gap = None if last else self._gaps.get(tool, RunningMean()).mean
        return as_vllm_xargs(
            tool=tool,
            predicted_output_tokens=None if output is None else max(1, round(output)),
            predicted_api_seconds=gap,
            session_end=1 if last else None,
        )
