"""What LAMPS expects of a request's next turn: its hints, or what past turns taught it."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from lamps.mechanism.hints import Hints


class RunningMean:
    """A running mean; with `window`, the last `window` values weigh about equally."""

    __slots__ = ("count", "value")

    def __init__(self) -> None:
        self.count = 0
        self.value = 0.0

    def add(self, x: float, window: int | None = None) -> None:
        """Take one value in (a plain mean until `window` values are in, then exponential)."""
        self.count += 1
        self.value += (x - self.value) / (self.count if window is None else min(self.count, window))


class KeyedRunningMean:
    """Running mean per key plus a pooled mean, starting from a prior.

    The mean weights the last `window` observations about equally (a plain mean that turns into
    an exponential average once `window` observations are in), so it follows slow drift.
    Unknown keys fall back to the pooled mean, and that to the prior. At most `max_keys` keys
    are kept, the least recently observed dropped first, so a client inventing tool names
    cannot grow a long-running server's memory.
    """

    def __init__(self, prior: float, window: int = 50, max_keys: int = 1024) -> None:
        if not math.isfinite(prior) or prior < 0:
            raise ValueError(f"prior must be finite and >= 0, got {prior!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.prior = float(prior)
        self.window = window
        self.max_keys = max_keys
        self._pooled = RunningMean()
        self._by_key: OrderedDict[str, RunningMean] = OrderedDict()

    def observe(self, key: str | None, value: float) -> None:
        """Record one observation for `key` (None = pooled only)."""
        if not math.isfinite(value) or value < 0:
            return
        self._pooled.add(value, self.window)
        if key is None:
            return
        m = self._by_key.get(key)
        if m is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key.popitem(last=False)
            m = self._by_key[key] = RunningMean()
        else:
            self._by_key.move_to_end(key)
        m.add(value, self.window)

    @property
    def num_keys(self) -> int:
        """Keys with an estimate of their own."""
        return len(self._by_key)

    def predict(self, key: str | None) -> float:
        """Best estimate for `key`."""
        if key is not None:
            m = self._by_key.get(key)
            if m is not None:
                return m.value
        return self._pooled.value if self._pooled.count else self.prior

    def observations(self, key: str | None = None) -> int:
        """How many observations back the estimate for `key` (pooled when None)."""
        m = self._pooled if key is None else self._by_key.get(key)
        return m.count if m is not None else 0


class ApiDurationPredictor(KeyedRunningMean):
    """API call duration in seconds, learned per tool from the pauses this engine observed."""


class OutputLengthPredictor(KeyedRunningMean):
    """Output tokens per turn (until the next API call or the end), learned per tool."""


class CallCountPredictor:
    """How many API calls a request (or a session) still makes, learned per key from finished ones.

    Keeps, per key, a bounded histogram of total call counts of finished requests; the forecast
    for one that has made `made` calls and is about to make another is the mean residual
    `E[N - made - 1 | N > made]`, so it sharpens as calls are observed (a request past the
    typical count is expected to finish soon, one early in a long-running kind to go on).
    Unknown keys use the pooled histogram; with no observation at all the forecast is 0 (the
    one-call-ahead score). Counts at or above `max_count` share the last bin.
    """

    def __init__(self, max_count: int = 64, max_keys: int = 1024) -> None:
        if max_count < 1 or max_keys < 1:
            raise ValueError(f"max_count and max_keys must be >= 1, got {max_count}, {max_keys}")
        self.max_count = max_count
        self.max_keys = max_keys
        self._pooled = [0] * (max_count + 1)
        self._by_key: OrderedDict[str, list[int]] = OrderedDict()

    def observe(self, key: str | None, calls: int) -> None:
        """A request of `key` finished after `calls` API calls."""
        if calls < 0:
            return
        n = min(calls, self.max_count)
        self._pooled[n] += 1
        if key is None:
            return
        hist = self._by_key.get(key)
        if hist is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key.popitem(last=False)
            hist = self._by_key[key] = [0] * (self.max_count + 1)
        else:
            self._by_key.move_to_end(key)
        hist[n] += 1

    def later_calls(self, key: str | None, made: int) -> float:
        """Expected calls after the one a request that made `made` calls is about to make."""
        hist = self._by_key.get(key) if key is not None else None
        if hist is None or not any(hist[made + 1 :]):
            hist = self._pooled
        total = weighted = 0
        for n in range(made + 1, self.max_count + 1):
            total += hist[n]
            weighted += hist[n] * (n - made - 1)
        return weighted / total if total else 0.0


class Forecaster:
    """A request's next turn and API call: its hints where given, learned estimates otherwise."""

    def __init__(self, default_api_seconds: float, default_output_tokens: float) -> None:
        self.api = ApiDurationPredictor(default_api_seconds)
        self.output = OutputLengthPredictor(default_output_tokens)
        self.returned = KeyedRunningMean(0.0)
        self.final_output = KeyedRunningMean(default_output_tokens)
        self.calls = CallCountPredictor()

    def rest(self, tool: str | None, made: int, remaining_hint: int | None) -> Rest:
        """The request's predicted life after its next call: later calls, their mean turn, and
        its final answer. `remaining_hint`: the client's count of later calls, if given."""
        later = (
            float(remaining_hint)
            if remaining_hint is not None
            else self.calls.later_calls(tool, made)
        )
        return Rest(
            later_calls=later,
            output_tokens=self.output.predict(tool),
            api_seconds=self.api.predict(tool),
            return_tokens=self.returned.predict(tool),
            final_output_tokens=self.final_output.predict(tool),
        )

    def observe_finish(self, tool: str | None, calls: int, final_output_tokens: int) -> None:
        """A request (or session) of `tool` finished after `calls` calls and a final turn."""
        self.calls.observe(tool, calls)
        self.final_output.observe(tool, final_output_tokens)

    def api_seconds(self, hints: Hints) -> float:
        """Predicted duration of the API call after the current turn."""
        if hints.predicted_api_seconds is not None:
            return hints.predicted_api_seconds
        return self.api.predict(hints.tool)

    def turn(self, hints: Hints, max_tokens: int | None, resumable: bool) -> Turn:
        """The current turn of a request: output tokens, then (for a session) its API call."""
        tokens = hints.predicted_output_tokens
        if tokens is None:
            tokens = round(self.output.predict(hints.tool))
        if max_tokens is not None:
            tokens = min(tokens, max_tokens)
        if not resumable:
            return Turn(max(tokens, 1), 0.0, 0)
        returned = hints.api_return_tokens
        if returned is None:
            returned = round(self.returned.predict(hints.tool))
        return Turn(max(tokens, 1), self.api_seconds(hints), returned)

    def observe_turn(self, tool: str | None, output_tokens: int) -> None:
        """A turn ended after `output_tokens`."""
        self.output.observe(tool, output_tokens)

    def observe_call(self, tool: str | None, seconds: float, returned_tokens: int) -> None:
        """An API call lasted `seconds` and returned `returned_tokens`."""
        self.api.observe(tool, seconds)
        self.returned.observe(tool, returned_tokens)


@dataclass(frozen=True)
class Rest:
    """A request's predicted life after its next call: `later_calls` more turns with calls
    (mean values, the count may be fractional), then a final answer."""

    later_calls: float
    output_tokens: float
    api_seconds: float
    return_tokens: float
    final_output_tokens: float


@dataclass(frozen=True)
class Turn:
    """A forecast turn: output tokens, then the API call's seconds and returned tokens."""

    output_tokens: int
    api_seconds: float
    return_tokens: int
