"""The ranking part of the LAMPS scheduler: scores, starvation clocks, running order, rescoring.

`LampsRanking` is mixed into `lamps.vllm.scheduler._LampsMixin`: it turns a request's forecast
turn (`predictors.Forecaster`, completed from its session's history for a stateless turn) into
its memory-over-time score (`scoring.Scorer`), gives the waiting queues their starvation
patience and ticks, decides when the running list is re-sorted and when the waiting queues are
re-scored, and sums the scores into the engine's predicted memory over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from vllm.v1.request import Request

from lamps._core import RankingQueue
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.config import LampsConfig
from lamps.vllm.counters import LampsStats
from lamps.vllm.pause_policy import PauseController
from lamps.vllm.predictors import Forecaster
from lamps.vllm.queue import RankingRequestQueue
from lamps.vllm.scoring import Scorer, score_inputs
from lamps.vllm.sessions.parking import SessionParking
from lamps.vllm.state import NOT_QUEUED, RequestState, RequestTable
from lamps.vllm.switches import RunningOrder, ScoreHorizon, StarvationRule

RUNNING_RESORT_STEPS = 8
"""Steps between two sorts of an unchanged running list."""


class LampsRanking:
    """Scores requests by the KV memory they hold over time and keeps the orders by score."""

    # Set by `_LampsMixin.__init__` (and vLLM's Scheduler: `running`, the token budget).
    lamps_config: LampsConfig
    lamps_stats: LampsStats
    forecaster: Forecaster
    waiting: RankingRequestQueue
    kv_holding_waiting: RankingRequestQueue
    running: list[Request]
    max_num_scheduled_tokens: int
    _clock: Callable[[], float]
    _table: RequestTable
    _scorer: Scorer
    _batch: BatchEstimator
    _sessions: SessionParking
    _pause_policy: PauseController
    _timed_starvation: bool
    _starvation_clock_ms: float | None
    _steps: int
    _batch_key_at_rescore: tuple[float, float, float] | None
    _running_changed: bool
    _last_running_sort: int
    _last_rescore_iteration: int

    @staticmethod
    def _starvation_threshold(cfg: LampsConfig) -> int:
        """The queues' default wait before promotion, in their clock's ticks (0: none)."""
        if not cfg.ranking or cfg.starvation_rule in (
            StarvationRule.NONE,
            StarvationRule.RELATIVE,
            StarvationRule.AUTHORS,
        ):
            return 0
        if cfg.starvation_rule == StarvationRule.SECONDS:
            return max(round(cfg.starvation_seconds * 1000), 1)
        return cfg.starvation_threshold

    def _patience(self, request: Request, state: RequestState) -> int | None:
        """A request's own wait before promotion, for the relative and the authors' rules."""
        cfg = self.lamps_config
        if cfg.starvation_rule == StarvationRule.AUTHORS:
            # Only a request that already ran once counts its waiting (mars-codebase).
            if not state.scheduled_once or cfg.starvation_threshold == 0:
                return RankingQueue.never
            return cfg.starvation_threshold
        # Relative: the predicted service time (its pending prefill, then its remaining
        # turn at one token per iteration), times the factor, in milliseconds.
        slot = state.slot
        steps = -(-int(self._table.pending[slot]) // self.max_num_scheduled_tokens)
        service = (steps + int(self._table.output[slot])) * self._batch.iteration_seconds()
        return max(round(cfg.starvation_factor * service * 1000), 1)

    def _rank(self, request: Request, state: RequestState) -> float:
        """Record a request's score inputs in the table and return its score (the queues' key)."""
        if not self.lamps_config.ranking:
            return 0.0  # FCFS: equal scores fall back to arrival order
        hints, continues = state.hints, request.resumable
        tool, made, reusable = state.first_tool or hints.tool, state.calls, 0
        if request.session_id is not None and not request.resumable:
            # A turn of a stateless session: forecast with what the session has shown, and
            # owe only the prefill its parked turn does not cover.
            hints, continues = self._sessions.forecast_hints(request, hints)
            tool, made = self._sessions.history_key(request, hints)
            if self.lamps_config.session_prefix_aware:
                reusable = self._sessions.reusable_tokens(request)
        turn = self.forecaster.turn(hints, request.max_tokens, continues)
        rest = None
        if self.lamps_config.score_horizon == ScoreHorizon.LIFE:
            rest = self.forecaster.rest(tool, made, hints.remaining_calls)
        inputs = score_inputs(request, turn, rest, reusable)
        self._table.set_inputs(state.slot, inputs)
        return self._scorer.score(inputs, self._batch.state)

    def _running_order_due(self) -> bool:
        """Whether to sort the running list by score before this step."""
        cfg = self.lamps_config
        if not cfg.ranking or cfg.running_order != RunningOrder.SCORE:
            return False
        if self._running_changed or self._steps - self._last_running_sort >= RUNNING_RESORT_STEPS:
            self._running_changed = False
            self._last_running_sort = self._steps
            return True
        return False

    def _running_scores(self, running: list[Request], batch: Any) -> np.ndarray:
        """The running requests' scores; promoted ones and those preempted `max_preemptions`
        times already get -inf, so they go first and are never vLLM's victim (the last)."""
        table = self._table
        states = [table.require(r.request_id) for r in running]
        scores = self._scorer.running_scores(running, states, table, batch)
        limit = self.lamps_config.max_preemptions or math.inf
        first = [
            i
            for i, (r, st) in enumerate(zip(running, states, strict=True))
            if st.promoted or r.num_preemptions >= limit
        ]
        if first:
            scores[first] = -math.inf
        return scores

    def _starvation_ticks(self, now: float) -> int:
        """Ticks of the queues' clock since the last step: 1, or the milliseconds elapsed."""
        if not self._timed_starvation:
            return 1
        last, self._starvation_clock_ms = self._starvation_clock_ms, now * 1000.0
        return 0 if last is None else max(int(now * 1000.0) - int(last), 0)

    def _maybe_rescore(self) -> None:
        """Re-score both waiting queues when the batch moved by more than the tolerance."""
        cfg = self.lamps_config
        iteration = self._steps
        if iteration - self._last_rescore_iteration < cfg.rescore_interval:
            return
        if not (self.waiting or self.kv_holding_waiting):
            return
        b = self._batch.state
        key = (
            b.running_tokens_per_iteration,
            b.running_context_tokens,
            b.prefix_cache_hit_fraction,
        )
        last = self._batch_key_at_rescore
        tol = cfg.rescore_tolerance
        if last is not None and all(
            abs(x - y) <= tol * max(abs(y), 1.0) for x, y in zip(key, last, strict=True)
        ):
            return
        scores = self._scorer.table_scores(self._table, b)
        self.waiting.rescore(scores)
        self.kv_holding_waiting.rescore(scores)
        self._batch_key_at_rescore = key
        self._last_rescore_iteration = iteration
        self.lamps_stats.rescores += 1

    def lamps_memory_over_time(self) -> float:
        """KV token-seconds this engine is predicted to hold for what it has now.

        The LAMPS score (the area under a request's KV memory over the rest of its turn and
        the call after it) of every running and every queued request, plus the KV kept for
        parked session turns and paused sessions times the rest of their predicted gap.
        """
        now = self._clock()
        table, batch = self._table, self._batch.state
        total = self._sessions.pinned_token_seconds(now)
        total += self._pause_policy.preserved_token_seconds(now)
        states = [table.get(r.request_id) for r in self.running]
        running = [r for r, st in zip(self.running, states, strict=True) if st is not None]
        if running:
            known = [st for st in states if st is not None]
            total += float(self._scorer.running_scores(running, known, table, batch).sum())
        queued = table.queue_of[: table.num_slots()] != NOT_QUEUED
        if queued.any():
            total += float(self._scorer.table_scores(table, batch)[queued].sum())
        return total
