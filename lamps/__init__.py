"""LAMPS: memory-over-time scheduling of API-augmented LLM requests.

The scheduling core is C++ (`lamps._core`); this package re-exports it with type stubs.
Scores and waste are in token-seconds: KV tokens held times seconds held.
"""

from lamps._core import (
    MAX_SCORE,
    MAX_TOKENS,
    BatchState,
    CostModel,
    PausedRequest,
    RankingQueue,
    Segment,
    Strategy,
    choose_strategy,
    discard_waste,
    infercept_should_discard,
    infercept_swap_budget_tokens,
    preserve_waste,
    score_batch,
    score_request,
    swap_waste,
)

# The package version, written only here: pyproject.toml reads it (scikit-build-core's regex
# provider) and the build passes it to the extensions (lamps._core.__version__).
__version__ = "0.1.0"

__all__ = [
    "MAX_SCORE",
    "MAX_TOKENS",
    "BatchState",
    "CostModel",
    "PausedRequest",
    "RankingQueue",
    "Segment",
    "Strategy",
    "__version__",
    "choose_strategy",
    "discard_waste",
    "infercept_should_discard",
    "infercept_swap_budget_tokens",
    "preserve_waste",
    "score_batch",
    "score_request",
    "swap_waste",
]
