"""The simulated GPU's clock: how long one engine step takes, swap transfers included.

This is the replay's model of the *engine*, separate from the schedulers' own cost models
(``lamps.CostModel``, which LAMPS and InferCept use to decide, and which stay as they are).

One step that schedules ``n`` tokens takes (milliseconds)::

    overhead + max(weights, b + a*n)          CPU overhead; linear layers (a roofline: reading
                                              the weights, or the tokens' matrix products)
  + sum over decodes of  ctx * kv_bytes / (hbm * eta_kv)       attention reads each context
  + sum over prefill chunks of  k_pf * layers * q_dim/4096 * chunk * (ctx + chunk/2)
  + comm + comm_per_token * n                 tensor parallel: the all-reduces of a step
  + swap stall                                copies beyond what the step hides

``ctx`` is the context a request attends to (tokens computed before the step plus its own).
The prefill term counts (query, key) pairs, causal within a chunk, so a chunked 100k-token
prefill costs the full ~n^2/2 pairs; it scales with the query width ``q_dim`` (query heads x
head size), not with the KV heads: under grouped-query attention every query head still
multiplies against the shared K and V, so a GQA model's attention FLOPs are its query
width's. Reading the cached prefix's KV during a chunk is left out (for an 8,192-token chunk
over 100k cached tokens it is a few ms against seconds of attention compute).
The coefficients and their sources are in ``lamps.replay.profiles`` and the README
("Calibration"). Swap copies share one host link per direction: the copies a step starts
run back to back on their link, a fraction ``hidden_fraction`` of the step's compute time
hides them, and whatever the link still needs beyond that stalls the step, so every copy a
step starts has ended when the step ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFILL_REF_Q_DIM = 4096
"""The query width (heads x head size per GPU) at which the prefill coefficient was fitted."""


@dataclass(frozen=True)
class EngineModel:
    """Iteration time of one model on one GPU (see the module docstring for the formula)."""

    a_ms_per_token: float
    b_ms: float
    weights_ms: float
    overhead_ms: float
    kv_bytes_per_token: float
    hbm_bytes_per_second: float
    kv_read_efficiency: float
    prefill_ms_per_token_pair: float
    num_layers: int
    q_dim: int
    link_bytes_per_second: float
    hidden_fraction: float = 1.0
    comm_ms: float = 0.0
    comm_ms_per_token: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "a_ms_per_token",
            "kv_bytes_per_token",
            "hbm_bytes_per_second",
            "kv_read_efficiency",
            "link_bytes_per_second",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"engine model: {name} must be finite and > 0, got {value!r}")
        for name in (
            "b_ms",
            "weights_ms",
            "overhead_ms",
            "prefill_ms_per_token_pair",
            "comm_ms",
            "comm_ms_per_token",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"engine model: {name} must be finite and >= 0, got {value!r}")
        if not 0.0 <= self.hidden_fraction <= 1.0:
            raise ValueError(
                f"engine model: hidden_fraction must be in [0, 1], got {self.hidden_fraction!r}"
            )
        if self.kv_read_efficiency > 1.0:
            raise ValueError("engine model: kv_read_efficiency must be <= 1")

    @property
    def kv_read_ms_per_token(self) -> float:
        """Milliseconds to read one context token's KV (all layers) during a decode."""
        return 1e3 * self.kv_bytes_per_token / (self.hbm_bytes_per_second * self.kv_read_efficiency)

    @property
    def prefill_ms_per_pair(self) -> float:
        """Milliseconds of prefill attention per (query token, attended token) pair, all layers."""
        return self.prefill_ms_per_token_pair * self.num_layers * self.q_dim / PREFILL_REF_Q_DIM

    def step_ms(self, tokens: int, decode_context: int, prefill_pairs: float) -> float:
        """Compute time of a step: ``tokens`` scheduled, ``decode_context`` context tokens read
        by its decodes, ``prefill_pairs`` (query, key) pairs of its prefill chunks."""
        return (
            self.overhead_ms
            + max(self.weights_ms, self.b_ms + self.a_ms_per_token * tokens)
            + self.kv_read_ms_per_token * decode_context
            + self.prefill_ms_per_pair * prefill_pairs
            + self.comm_ms
            + self.comm_ms_per_token * tokens
        )

    def swap_seconds(self, num_tokens: float) -> float:
        """Seconds the host link needs to move ``num_tokens`` tokens of KV one way."""
        return num_tokens * self.kv_bytes_per_token / self.link_bytes_per_second

    def stall_seconds(self, link_busy_seconds: float, compute_seconds: float) -> float:
        """How much a step of ``compute_seconds`` is stretched by ``link_busy_seconds`` of copies
        (the longer direction, counted from the step's start) beyond what it hides."""
        return max(0.0, link_busy_seconds - self.hidden_fraction * compute_seconds)


def prefill_pairs(context_before: int, chunk: int) -> float:
    """(query, key) pairs a prefill chunk of ``chunk`` tokens after ``context_before`` computes
    (causal: each query attends to the cached context and the chunk's earlier tokens)."""
    return chunk * (context_before + (chunk + 1) / 2)


@dataclass
class StepClock:
    """Accumulates one step's work, then gives its duration from the engine model."""

    model: EngineModel
    tokens: int = 0
    decode_context: int = 0
    pairs: float = 0.0

    def add(self, context_before: int, scheduled: int) -> None:
        """A request scheduled ``scheduled`` tokens after ``context_before`` computed ones."""
        self.tokens += scheduled
        if scheduled == 1 and context_before > 0:
            self.decode_context += context_before + 1
        else:
            self.pairs += prefill_pairs(context_before, scheduled)

    def compute_seconds(self) -> float:
        """The step's compute time in seconds."""
        return 1e-3 * self.model.step_ms(self.tokens, self.decode_context, self.pairs)
