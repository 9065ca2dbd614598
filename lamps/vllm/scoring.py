"""LAMPS' memory-over-time scores of vLLM requests: inputs and the batch in, scores out.

A request's score is the area under its KV memory over the rest of its life
(`lamps.score_request`; `lamps.score_batch` for many at once): the rest of its current turn,
the API call after it, and (score horizon `life`) its predicted later calls, each counted at
its expected number, and its final answer; each pause under the strategy the core chooses for
it. Nothing here stores anything: the scheduler records the inputs in its `RequestTable` for
batch re-scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from vllm.v1.request import Request

from lamps._core import BatchState, Segment, score_batch, score_request
from lamps.vllm.predictors import Rest, Turn
from lamps.vllm.state import SEGMENTS_PER_SLOT, RequestState, RequestTable, ScoreInputs


def score_inputs(
    request: Request, turn: Turn, rest: Rest | None, reusable_tokens: int = 0
) -> ScoreInputs:
    """A request's score inputs for its forecast turn and, when it goes on, the rest.

    `reusable_tokens`: of its prompt, tokens it will not compute (its session's parked turn,
    cached or in host memory): only the rest is a prefill it still owes.
    """
    context = request.num_tokens
    later = rest is not None and turn.api_seconds + turn.return_tokens > 0
    computed = max(request.num_computed_tokens, min(reusable_tokens, context))
    return ScoreInputs(
        context=context,
        pending=max(context - computed, 0),
        turn=turn.output_tokens,
        output=max(turn.output_tokens - request.num_output_tokens, 1),
        api_seconds=turn.api_seconds,
        return_tokens=turn.return_tokens,
        later_calls=rest.later_calls if later and rest else 0.0,
        later_output=round(rest.output_tokens) if later and rest else 0,
        later_api_seconds=rest.api_seconds if later and rest else 0.0,
        later_return=round(rest.return_tokens) if later and rest else 0,
        final_output=max(round(rest.final_output_tokens), 1) if later and rest else 0,
    )


class Scorer:
    """Scores against a cost model; swap is one of the strategies only when allowed."""

    def __init__(self, cost: Any, allow_swap: bool) -> None:
        self._cost = cost
        self._allow_swap = allow_swap

    def score(self, inputs: ScoreInputs, batch: BatchState) -> float:
        """One request's score."""
        segments = [Segment(inputs.output, inputs.api_seconds, inputs.return_tokens)]
        if inputs.final_output:
            segments.append(
                Segment(
                    inputs.later_output,
                    inputs.later_api_seconds,
                    inputs.later_return,
                    repeat=inputs.later_calls,
                )
            )
            segments.append(Segment(inputs.final_output))
        return float(
            score_request(
                inputs.context, inputs.pending, segments, batch, self._cost, self._allow_swap
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
        k = SEGMENTS_PER_SLOT
        slots = np.fromiter((st.slot for st in states), np.int64, n)
        context = np.fromiter((r.num_tokens for r in running), np.int64, n)
        computed = np.fromiter((r.num_computed_tokens for r in running), np.int64, n)
        produced = np.fromiter((r.num_output_tokens for r in running), np.int64, n)
        pending = np.maximum(context - computed, 0)
        segments = (slots[:, None] * k + np.arange(k)).ravel()
        output = table.output[segments]
        output[::k] = np.maximum(table.turn[slots] - produced, 1)
        return score_batch(
            context, pending, table.offsets[: n + 1], output, table.api_seconds[segments],
            table.return_tokens[segments], table.undecided[: n * k], batch, self._cost,
            self._allow_swap, repeat=table.repeat[segments],
        )  # fmt: skip

    def table_scores(self, table: RequestTable, batch: BatchState) -> np.ndarray:
        """Scores of every slot from its recorded inputs (into the table's score buffer)."""
        n = table.num_slots()
        m = n * SEGMENTS_PER_SLOT
        return score_batch(
            table.context[:n], table.pending[:n], table.offsets[: n + 1], table.output[:m],
            table.api_seconds[:m], table.return_tokens[:m], table.undecided[:m], batch, self._cost,
            self._allow_swap, out=table.scores[:n], repeat=table.repeat[:m],
        )  # fmt: skip
