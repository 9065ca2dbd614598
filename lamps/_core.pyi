"""Type stubs of the C++ scheduling core (csrc/bindings.cpp)."""

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

MAX_TOKENS: int
"""2**53: in-range token counts go up to here (CostModel's coefficient bounds assume it)."""
MAX_SCORE: float
"""The largest score or waste reported (sys.float_info.max): larger results saturate here."""

class Strategy(enum.IntEnum):
    """How a paused request's KV cache is handled during an API call."""

    PRESERVE = 0
    DISCARD = 1
    SWAP = 2

class CostModel:
    """Iteration time a*n + c ms for n tokens plus attention, and host-link swap time.

    A prefill chunk of k tokens after h computed ones adds `prefill_ms_per_token_pair` per
    (query, key) pair, k*(h + k/2); a decode adds `kv_read_ms_per_token` per context token it
    reads. The token budget is not here: it is the scheduler's (`BatchState.token_budget`).
    Raises ValueError naming the coefficient when one is not finite and positive (c_ms and the
    attention coefficients: >= 0), or is so large that requests of up to MAX_TOKENS tokens could
    not score finitely (a_ms_per_token and kv_read_ms_per_token <= ~5.7e253, c_ms <= ~5.2e269,
    prefill_ms_per_token_pair <= ~6.3e237, kv_bytes_per_token / link_bytes_per_second
    <= ~5.7e250 s/token).
    """

    def __init__(
        self,
        a_ms_per_token: float,
        c_ms: float,
        kv_bytes_per_token: float,
        link_bytes_per_second: float,
        *,
        prefill_ms_per_token_pair: float = 0.0,
        kv_read_ms_per_token: float = 0.0,
        name: str = "custom",
    ) -> None: ...
    @staticmethod
    def profile(name: str) -> CostModel:
        """A built-in profile by name."""
    @staticmethod
    def profiles() -> list[str]:
        """Names of the built-in profiles."""
    @property
    def a_ms_per_token(self) -> float: ...
    @property
    def c_ms(self) -> float: ...
    @property
    def kv_bytes_per_token(self) -> float: ...
    @property
    def link_bytes_per_second(self) -> float: ...
    @property
    def prefill_ms_per_token_pair(self) -> float: ...
    @property
    def kv_read_ms_per_token(self) -> float: ...
    @property
    def name(self) -> str: ...
    def iteration_seconds(self, tokens: float) -> float:
        """Seconds of the linear part (a*n + c) of an iteration of `tokens` tokens."""
    def swap_seconds(self, tokens: float) -> float:
        """Seconds to move `tokens` tokens of KV cache one way over the host link."""

class BatchState:
    """The engine's token budget and its live running batch, input of waste and score.

    `token_budget`: tokens the scheduler may process per iteration (vLLM's
    max_num_batched_tokens); `running_tokens_per_iteration`: the running requests' decodes;
    `iteration_seconds`: a measured decode iteration (0: the cost model's);
    `swap_queue_seconds`: link time of the copies already queued or in flight.
    """

    def __init__(
        self,
        *,
        token_budget: float,
        running_tokens_per_iteration: float = 0.0,
        running_context_tokens: float = 0.0,
        prefix_cache_hit_fraction: float = 0.0,
        iteration_seconds: float = 0.0,
        swap_queue_seconds: float = 0.0,
    ) -> None: ...
    @property
    def token_budget(self) -> float: ...
    @property
    def running_tokens_per_iteration(self) -> float: ...
    @property
    def running_context_tokens(self) -> float: ...
    @property
    def prefix_cache_hit_fraction(self) -> float: ...
    @property
    def iteration_seconds(self) -> float: ...
    @property
    def swap_queue_seconds(self) -> float: ...

class PausedRequest:
    """A request whose API call is starting."""

    def __init__(
        self, context_tokens: float, cached_tokens: float = 0.0, api_seconds: float = 0.0
    ) -> None: ...
    @property
    def context_tokens(self) -> float: ...
    @property
    def cached_tokens(self) -> float: ...
    @property
    def api_seconds(self) -> float: ...

class Segment:
    """Decode output_tokens, then an optional API call."""

    def __init__(
        self,
        output_tokens: float,
        api_seconds: float = 0.0,
        return_tokens: float = 0.0,
        strategy: Strategy | None = None,
        repeat: float = 1.0,
    ) -> None: ...
    @property
    def output_tokens(self) -> float: ...
    @property
    def api_seconds(self) -> float: ...
    @property
    def return_tokens(self) -> float: ...
    @property
    def strategy(self) -> Strategy | None: ...
    @property
    def repeat(self) -> float:
        """How many such segments in a row (an expected count may be fractional)."""
    @property
    def has_api_call(self) -> bool: ...

def preserve_waste(request: PausedRequest, batch: BatchState, cost: CostModel) -> float:
    """Token-seconds wasted keeping the KV cache in GPU memory during the call."""

def discard_waste(request: PausedRequest, batch: BatchState, cost: CostModel) -> float:
    """Token-seconds wasted recomputing the uncached context after the call."""

def swap_waste(request: PausedRequest, batch: BatchState, cost: CostModel) -> float:
    """Token-seconds wasted moving the KV cache out and back over the host link."""

def choose_strategy(
    request: PausedRequest, batch: BatchState, cost: CostModel, allow_swap: bool = True
) -> Strategy:
    """The LAMPS choice: the strategy of least waste."""

def infercept_should_discard(request: PausedRequest, batch: BatchState, cost: CostModel) -> bool:
    """InferCept's rule: discard when W_d < W_p for the remaining call time."""

def infercept_swap_budget_tokens(batch: BatchState, cost: CostModel) -> int:
    """Tokens one iteration's compute can hide a one-way swap of."""

def score_request(
    context_tokens: float,
    pending_prefill_tokens: float,
    segments: Sequence[Segment],
    batch: BatchState,
    cost: CostModel,
    allow_swap: bool = True,
) -> float:
    """Memory-over-time score (token-seconds) of one request; saturates at MAX_SCORE."""

def score_batch(
    context_tokens: npt.NDArray[np.int64],
    pending_prefill_tokens: npt.NDArray[np.int64],
    segment_offsets: npt.NDArray[np.int64],
    output_tokens: npt.NDArray[np.int64],
    api_seconds: npt.NDArray[np.float64],
    return_tokens: npt.NDArray[np.int64],
    strategy: npt.NDArray[np.int8],
    batch: BatchState,
    cost: CostModel,
    allow_swap: bool = True,
    out: npt.NDArray[np.float64] | None = None,
    repeat: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """Scores of many requests from column arrays, read in place (zero-copy).

    `repeat` (float64, one per segment; None: each once) counts how many such segments in a
    row a segment stands for (`Segment.repeat`).

    Scores saturate at MAX_SCORE. Every array must be a 1-D C-contiguous numpy array of exactly
    the annotated dtype (TypeError naming it otherwise); `out`, when given, must also be
    writeable and have len(context_tokens) elements, and is returned.
    """

class RankingQueue:
    """Indexed min-heap of handles by score, with starvation prevention."""

    max_handle: int
    never: int
    def __init__(self, starvation_threshold: int | None = 100, promoted_share: int = 1) -> None:
        """`promoted_share` k >= 1: at most one pop in k goes to the oldest promoted request
        while unpromoted ones wait (1: promoted always first)."""
    @property
    def starvation_threshold(self) -> int: ...
    @property
    def promoted_share(self) -> int: ...
    @property
    def iteration(self) -> int: ...
    def push(
        self,
        handle: int,
        score: float,
        arrival: float,
        waiting_since: int | None = None,
        promoted: bool = False,
        starve_after: int | None = None,
    ) -> None:
        """Queue a handle (unique while queued) with its score and arrival time; `starve_after`:
        ticks it may wait before promotion (None: the queue's threshold; `never`)."""
    def pop(self) -> int:
        """Remove and return the first handle."""
    def peek(self) -> int:
        """Return the first handle without removing it."""
    def erase(self, handle: int) -> None:
        """Remove a queued handle."""
    def update(self, handle: int, score: float) -> None:
        """Re-key one handle."""
    def update_many(self, handles: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> None:
        """Re-key many handles at once (int64 and float64 arrays)."""
    def tick(self, iterations: int = 1) -> int:
        """Advance the queue's clock; returns the number promoted."""
    def is_promoted(self, handle: int) -> bool:
        """Whether the handle was promoted for having waited too long."""
    def score(self, handle: int) -> float:
        """The handle's current score."""
    def waiting_since(self, handle: int) -> int:
        """The iteration the handle started waiting."""
    def ranked(self) -> list[int]:
        """Handles in pop order, without mutating."""
    def clear(self) -> None:
        """Remove every handle."""
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __contains__(self, handle: int) -> bool: ...
