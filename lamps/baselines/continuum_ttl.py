"""Continuum's time-to-live for a paused program's KV: the paper's cost-benefit rule and the code's.

Continuum (Li et al., arXiv 2511.02230; code `Hanchenli/vllm-continuum`, read here through the
fork `Whrlicht/vllm-continuum` at 22746a2, which carries its code and comments unchanged in
these parts) pins a finished turn's KV for a TTL when the turn ends in a tool call.

- `code_ttl`: what the public code does (`vllm/v1/core/estimate_with_func.py`,
  `ToolCallEstimator.set_up_pin` with `FIXED_THRESHOLD_CONTINUUM = 2.0`; durations from
  `update_func_call_exec_time`: the running mean of the tool's observed gaps between a turn's
  departure and the program's next arrival): no tool call, no pin; a tool whose mean observed
  duration exceeds 2 s, no pin; otherwise (an unseen tool included) a 2-second pin. Its README
  says the implementation is "without the estimation in the paper".
- `paper_ttl`: the paper's rule, Equation (2) with the cold start of v6 section 4.2, as
  reconstructed from the paper by `burninglhw/vllm-continuum` (`vllm/v1/core/
  continuum_policy.py`, `docs/continuum-paper.md`; the paper itself was not available here):
  the TTL maximizes `F_tool(tau) * B - tau`, the chance that the call has returned by `tau`
  times what pinning saves, `B = eta * T + reconstruction(context)`, less the time pinned;
  `T` is the mean queueing delay of a program's next turn after its KV was evicted, `eta =
  -Corr(k, N - k)` over finished programs (k turns done of N). Cold start (K = 100): with at
  most 100 observed tool calls in all, an exponential prior of mean 1 s and `eta = 1`, whose
  maximum is `tau = ln(B)` for B > 1 s, else 0; with at most 100 of this tool, the CDF of all
  tools' calls; else this tool's CDF. `tau` ranges over 0 and the observed durations; ties go
  to the shorter. `T` starts at 0 and `eta` is 0 where the correlation is undefined (the
  reconstruction's choices; the paper leaves them open). `reconstruction(context)` is the
  prefill time of the context in the engine's cost model (the paper profiles it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from lamps.choices import Choice


class TtlRule(Choice):
    """Which of Continuum's TTL rules a run uses."""

    PAPER = "paper", "the paper's cost-benefit rule (`paper_ttl`)"
    CODE = "code", "the public code's fixed 2-second pin (`code_ttl`)"


FIXED_THRESHOLD_SECONDS = 2.0  # estimate_with_func.py, FIXED_THRESHOLD_CONTINUUM
COLD_START_SAMPLES = 100  # paper v6 section 4.2 (K)
PRIOR_MEAN_SECONDS = 1.0  # paper v6 section 4.2: Exp(1 s)


def negative_correlation(pairs: list[tuple[int, int]]) -> float:
    """`-Corr(k, N - k)`; 0 when undefined (fewer than two pairs, or no variance)."""
    if len(pairs) < 2:
        return 0.0
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    xx = sum((x - mx) ** 2 for x, _ in pairs)
    yy = sum((y - my) ** 2 for _, y in pairs)
    if xx == 0 or yy == 0:
        return 0.0
    xy = sum((x - mx) * (y - my) for x, y in pairs)
    return max(-1.0, min(1.0, -xy / math.sqrt(xx * yy)))


class ToolHistory:
    """What Continuum learns online: tool durations, evicted waits, program lengths."""

    def __init__(self) -> None:
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.num_durations = 0
        self._wait_sum = 0.0
        self._wait_count = 0
        self._pairs: list[tuple[int, int]] = []
        self._eta: float | None = 0.0
        self._sorted: dict[str | None, tuple[int, np.ndarray]] = {}  # tool (None: all) -> CDF

    def observe_call(self, tool: str, seconds: float) -> None:
        """A tool call took `seconds` (a turn's departure to the program's next arrival)."""
        if math.isfinite(seconds) and seconds >= 0:
            self.durations[tool].append(seconds)
            self.num_durations += 1

    def observe_evicted_wait(self, seconds: float) -> None:
        """A turn whose program's KV had been evicted waited `seconds` to be admitted."""
        if math.isfinite(seconds) and seconds >= 0:
            self._wait_sum += seconds
            self._wait_count += 1

    def observe_program(self, turns: int) -> None:
        """A program finished after `turns` turns: one (k, N - k) pair per non-final turn."""
        self._pairs += [(k, turns - k) for k in range(1, turns)]
        self._eta = None

    @property
    def mean_evicted_wait(self) -> float:
        return self._wait_sum / self._wait_count if self._wait_count else 0.0

    @property
    def eta(self) -> float:
        if self._eta is None:
            self._eta = negative_correlation(self._pairs)
        return self._eta

    def sorted_durations(self, tool: str | None) -> np.ndarray:
        """The tool's observed durations (None: every tool's), sorted; cached until they grow."""
        count = self.num_durations if tool is None else len(self.durations.get(tool, ()))
        cached = self._sorted.get(tool)
        if cached is None or cached[0] != count:
            if tool is None:
                values = [v for samples in self.durations.values() for v in samples]
            else:
                values = self.durations.get(tool, [])
            cached = (count, np.sort(np.asarray(values, dtype=np.float64)))
            self._sorted[tool] = cached
        return cached[1]

    def mean_duration(self, tool: str) -> float | None:
        samples = self.durations.get(tool)
        return sum(samples) / len(samples) if samples else None


def code_ttl(history: ToolHistory, tool: str | None) -> float:
    """The public code's TTL: 2 s unless the tool's mean duration exceeds 2 s (or no tool)."""
    if tool is None:
        return 0.0
    mean = history.mean_duration(tool) or 0.0
    return 0.0 if mean > FIXED_THRESHOLD_SECONDS else FIXED_THRESHOLD_SECONDS


def paper_ttl(
    history: ToolHistory,
    tool: str | None,
    context_tokens: int,
    reconstruction_seconds: Callable[[int], float],
) -> float:
    """The paper's cost-benefit TTL (Equation 2 with the cold start of section 4.2)."""
    if tool is None:
        return 0.0
    if history.num_durations <= COLD_START_SAMPLES:
        benefit = history.mean_evicted_wait + reconstruction_seconds(context_tokens)  # eta = 1
        if benefit <= PRIOR_MEAN_SECONDS:
            return 0.0
        return PRIOR_MEAN_SECONDS * math.log(benefit / PRIOR_MEAN_SECONDS)
    own = len(history.durations.get(tool, ())) > COLD_START_SAMPLES
    samples = history.sorted_durations(tool if own else None)
    benefit = history.eta * history.mean_evicted_wait + reconstruction_seconds(context_tokens)
    # F(t) at each sample t (the last of equal values has the full count), less t; tau = 0 is
    # worth F(0) * B. The first maximum is the shortest TTL among equals.
    n = len(samples)
    utility = np.arange(1, n + 1) / n * benefit - samples
    zero = np.searchsorted(samples, 0.0, side="right") / n * benefit
    best = int(np.argmax(utility))
    return float(samples[best]) if utility[best] > zero else 0.0
