"""LAMPS' memory-over-time scores of vLLM requests: inputs and the batch in, scores out.

A request's score is the area under its KV memory over the rest of its current turn and the
API call after it (`lamps.score_request`; `lamps.score_batch` for many at once). Nothing here
stores anything: the scheduler records the inputs in its `RequestTable` for batch re-scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from vllm.v1.request import Request

from lamps._core import BatchState, Segment, score_batch, score_request
from lamps.vllm.predictors import Turn
from lamps.vllm.state import RequestState, RequestTable, ScoreInputs


def score_inputs(request: Request, turn: Turn) -> ScoreInputs:
    """A request's score inputs for its forecast turn."""
    context = request.num_tokens
    return ScoreInputs(
        context=context,
        pending=max(context - request.num_computed_tokens, 0),
        turn=turn.output_tokens,
        output=max(turn.output_tokens - request.num_output_tokens, 1),
        api_seconds=turn.api_seconds,
        return_tokens=turn.return_tokens,
    )


class Scorer:
    """Scores against a cost model; swap is one of the strategies only when allowed."""

    def __init__(self, cost: Any, allow_swap: bool) -> None:
        self._cost = cost
        self._allow_swap = allow_swap

    def score(self, inputs: ScoreInputs, batch: BatchState) -> float:
        """One request's score."""
        segment = Segment(inputs.output, inputs.api_seconds, inputs.return_tokens)
        return float(
            score_request(
                inputs.context, inputs.pending, [segment], batch, self._cost, self._allow_swap
            )
        )

    def running_scores(
        self,
        running: Sequence[Request],
        states: Sequence[RequestState],
        table: RequestTable,
        batch: BatchState,
    ) -> np.ndarray:
        """Scores of the running requests, from their live progress and recorded turns."""
        n = len(running)
        slots = np.fromiter((st.slot for st in states), np.int64, n)
        context = np.fromiter((r.num_tokens for r in running), np.int64, n)
        computed = np.fromiter((r.num_computed_tokens for r in running), np.int64, n)
        produced = np.fromiter((r.num_output_tokens for r in running), np.int64, n)
        pending = np.maximum(context - computed, 0)
        output = np.maximum(table.turn[slots] - produced, 1)
        return score_batch(
            context, pending, table.offsets[: n + 1], output,
            np.ascontiguousarray(table.api[slots]), np.ascontiguousarray(table.ret[slots]),
            table.undecided[:n], batch, self._cost, self._allow_swap,
        )  # fmt: skip

    def table_scores(self, table: RequestTable, batch: BatchState) -> np.ndarray:
        """Scores of every slot from its recorded inputs (into the table's score buffer)."""
        n = table.num_slots()
        return score_batch(
            table.context[:n], table.pending[:n], table.offsets[: n + 1], table.output[:n],
            table.api[:n], table.ret[:n], table.undecided[:n], batch, self._cost,
            self._allow_swap, out=table.scores[:n],
        )  # fmt: skip
