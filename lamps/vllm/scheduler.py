"""LampsScheduler: vLLM's scheduler with LAMPS ordering, victim choice and API-pause strategies.

Nothing of vLLM's `schedule()` is copied; this module only wires vLLM's events (through
`lamps.mechanism.compat.SchedulerHooks`) to small parts with one job each:
- the waiting queues (`waiting`, `kv_holding_waiting`) are `RankingRequestQueue`s keyed by the
  memory-over-time score (`scoring.Scorer` of the turn `predictors.Forecaster` expects);
- the scores, starvation clocks, running order and rescoring are `ranking.LampsRanking`'s;
- before each step the running list is sorted by score (promoted requests first), so vLLM's
  walk hands the token budget out in score order and its victim, `running[-1]`, is the running
  request with the largest score (`batch.BatchEstimator` tracks the batch the costs use);
- when a session pauses for an API call, `pause_policy.PauseController` keeps, discards or
  swaps its KV through the pause mechanism (`pausing.KvPauses`), and re-decides overruns;
- when the next input arrives, the call is measured, the session is resumed and re-ranked;
- `stats.LampsStats` counts it all; `stats.StatsLog` prints the periodic line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps._core import Strategy
from lamps.mechanism.capabilities import capability_summary, session_turn_keeper
from lamps.mechanism.compat import SchedulerHooks, admitted_req_ids
from lamps.mechanism.hints import Hints, parse_hints
from lamps.mechanism.pausing import KvPauses
from lamps.mechanism.stats_channel import attach_stats_payload
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.config import LampsConfig, served_kv_bytes_per_token
from lamps.vllm.counters import LampsStats, StatsLog
from lamps.vllm.pause_policy import PauseController
from lamps.vllm.predictors import Forecaster
from lamps.vllm.prometheus import stats_payload
from lamps.vllm.queue import RankingRequestQueue
from lamps.vllm.ranking import LampsRanking
from lamps.vllm.scoring import Scorer
from lamps.vllm.sessions.parking import SessionParking
from lamps.vllm.state import RequestTable
from lamps.vllm.switches import StarvationRule

# A child of vLLM's logger, so `vllm serve` prints LAMPS lines with its format and level.
logger = logging.getLogger("vllm.lamps")

_WAITING_QUEUE_ID = 1
_KV_HOLDING_QUEUE_ID = 2

# Finished as the client asked: what they did is a sample of requests' lives. A streaming
# session closed by its client between turns finishes "aborted" while still resumable.
_COMPLETED = (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH_CAPPED)


@dataclass(frozen=True)
class RequestView:
    """What LAMPS knows of a live request (`LampsScheduler.lamps_state`)."""

    request_id: str
    strategy: Strategy | None  # applied to the current pause; None while not paused
    frontier: int | None  # context computed when its KV was released; None while held
    promoted: bool  # promoted by starvation prevention


class _LampsMixin(LampsRanking, SchedulerHooks):
    """The LAMPS behaviour, mixed into vLLM's Scheduler or AsyncScheduler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = LampsConfig.load(self.vllm_config.additional_config)
        self.lamps_config = cfg
        self.lamps_stats = LampsStats()
        self._cost = cfg.make_cost_model(served_kv_bytes_per_token(self.kv_cache_config))
        self._clock: Callable[[], float] = time.monotonic
        self._table = RequestTable()
        self.forecaster = Forecaster(cfg.default_api_seconds, float(cfg.default_output_tokens))
        self._scorer = Scorer(self._cost, cfg.allow_swap)
        if self.policy != SchedulingPolicy.FCFS:
            logger.warning(
                "LAMPS orders requests by its own score; ignoring --scheduling-policy=%s",
                self.policy.value,
            )
            self.policy = SchedulingPolicy.FCFS
        # Time-based starvation rules tick the queues' clock in milliseconds.
        self._timed_starvation = cfg.starvation_rule in (
            StarvationRule.SECONDS,
            StarvationRule.RELATIVE,
        )
        threshold = self._starvation_threshold(cfg)
        patience = (
            self._patience
            if cfg.starvation_rule in (StarvationRule.RELATIVE, StarvationRule.AUTHORS)
            else None
        )
        share = cfg.starvation_share
        self.waiting = RankingRequestQueue(
            self._table, self._rank, _WAITING_QUEUE_ID, threshold, patience, share
        )
        self.kv_holding_waiting = RankingRequestQueue(
            self._table, self._rank, _KV_HOLDING_QUEUE_ID, threshold, patience, share
        )
        self._starvation_clock_ms: float | None = None
        self._steps = 0
        block_pool = self.kv_cache_manager.block_pool
        self._batch = BatchEstimator(
            self._cost, self.block_size, bool(self.cache_config.enable_prefix_caching),
            self.max_num_scheduled_tokens,
        )  # fmt: skip
        self.kv_pauses = KvPauses(self)
        swapper = self.kv_pauses.swapper
        self._link_backlog: Callable[[], tuple[int, int]] = (
            swapper.lamps_link_backlog_tokens if swapper is not None else lambda: (0, 0)
        )
        self._pause_policy = PauseController(
            self.kv_pauses, self._batch, self._cost, block_pool.get_num_free_blocks,
            self.lamps_stats, allow_swap=cfg.allow_swap, redecide=cfg.redecide,
            swap_policy=cfg.swap_policy,
        )  # fmt: skip
        self._sessions = SessionParking(
            self.kv_pauses, self._batch, self._cost, cfg, self.lamps_stats, self.forecaster,
            self.block_size, block_pool.num_gpu_blocks, block_pool.get_num_free_blocks,
            session_turn_keeper(self.connector),
        )  # fmt: skip
        self._batch_key_at_rescore: tuple[float, float, float] | None = None
        # The running list is re-sorted when its members changed, else every few steps (its
        # scores move only as the requests decode).
        self._running_changed = True
        self._last_running_sort = 0
        self._last_rescore_iteration = -(1 << 62)
        self._log = StatsLog(self.lamps_stats, cfg.log_interval_s, self._clock())
        logger.info(
            "LAMPS scheduler %s: %s; connector %s",
            type(self).__name__, cfg.as_dict(), capability_summary(self.connector),
        )  # fmt: skip

    # ----- public surface -------------------------------------------------------------------

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use `clock()` (seconds) for pause durations and the log interval (default monotonic)."""
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._log.restart(clock())
        self._batch.reset_clock()

    def lamps_state(self, request_id: str) -> RequestView | None:
        """LAMPS' view of a live request (None once finished)."""
        state = self._table.get(request_id)
        if state is None:
            return None
        strategy = None if state.strategy is None else Strategy(state.strategy)
        return RequestView(
            request_id, strategy, self.kv_pauses.frontier(request_id), state.promoted
        )

    @property
    def lamps_num_tracked(self) -> int:
        """Requests LAMPS keeps side state for (equals the live requests)."""
        return len(self._table)

    @property
    def lamps_num_slots(self) -> int:
        """Side-table slots handed out so far (freed ones are reused)."""
        return self._table.num_slots()

    # ----- steps ------------------------------------------------------------------------------
    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        self._before_step()
        return super().schedule(*args, **kwargs)

    def _before_step(self) -> None:
        started = time.perf_counter()
        now = self._clock()
        self._batch.step_started(now)
        self._steps += 1
        ticks = self._starvation_ticks(now)
        self.lamps_stats.promotions += self.waiting.tick(ticks) + self.kv_holding_waiting.tick(
            ticks
        )
        running = self.running
        batch = self._batch.refresh(
            running,
            self.kv_cache_manager.block_pool.get_num_free_blocks(),
            self.forecaster.api.predict(None),
            self._link_backlog(),
        )
        running_scores = None
        if running and self._running_order_due():
            running_scores = self._running_scores(running, batch)
        self._pause_policy.before_step(now, self.requests, self._table.get)
        self._sessions.before_step(now)
        if self.lamps_config.ranking:
            self._maybe_rescore()
            if running_scores is not None:
                order = np.argsort(running_scores, kind="stable")
                if (np.diff(order) != 1).any():
                    self.running[:] = [running[i] for i in order.tolist()]
        self.lamps_stats.ranking_seconds += time.perf_counter() - started
        self._log.maybe_log(now, self._queues_summary())

    # ----- requests in and out ----------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:
            self._table.release(request.request_id)
            hints = self._read_hints(request)
            state = self._table.add(request.request_id, hints)
            state.first_tool = hints.tool
            if request.session_id is not None and not request.resumable:
                self._sessions.on_arrival(request, self._clock())
        super().add_request(request)  # type: ignore[misc]

    def _read_hints(self, request: Request) -> Hints:
        params = request.sampling_params
        hints, warnings = parse_hints(
            params.extra_args if params else None, request.request_id, logger
        )
        self.lamps_stats.hint_warnings += warnings
        if hints.any():
            self.lamps_stats.hinted_requests += 1
            logger.debug("LAMPS: request %s: hints %s", request.request_id, hints)
        return hints

    def on_finishing(self, request: Request) -> None:
        state = self._table.get(request.request_id)
        if request.session_id is None or request.resumable:
            if state is not None and (request.status in _COMPLETED or request.resumable):
                # What finished requests did teaches the rest of later ones' lives.
                self.forecaster.observe_finish(state.first_tool, state.calls, state.turn_output)
            return
        hints = state.hints if state is not None else Hints()
        self._sessions.on_finishing(request, hints, self._clock())

    def may_free_kv_on_shortage(self) -> bool:
        # A superset of what on_kv_shortage can release, checked in O(1): pins belong to
        # tracked sessions, and a released pause must be preserved. Neither is created while
        # vLLM schedules (turns park and sessions pause in update_from_output).
        return self._sessions.num_sessions > 0 or (
            self.lamps_config.release_paused_under_pressure and self._pause_policy.num_preserved > 0
        )

    def on_kv_shortage(self) -> bool:
        # Before vLLM preempts a running request: parked turns give their pinned blocks back,
        # then (if configured; off by default) paused sessions holding KV are released, the
        # costliest to keep first.
        now = self._clock()
        if self._sessions.release_for_pressure(now):
            return True
        if not self.lamps_config.release_paused_under_pressure:
            return False
        return self._pause_policy.release_for_pressure(now)

    def on_freed(self, request: Request) -> None:
        self._running_changed = True
        # vLLM frees a request that stopped while preempted (async scheduling: its last token
        # was in flight) before it removes it from the waiting queues; take it out now, while
        # its slot is still ours, or it would stay ranked after the slot is recycled.
        self.waiting.discard(request)
        self.kv_holding_waiting.discard(request)
        self._table.release(request.request_id)
        self.kv_pauses.forget(request.request_id)
        self._pause_policy.forget(request.request_id)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        if admitted_req_ids(scheduler_output) or scheduler_output.preempted_req_ids:
            self._running_changed = True
        for new in scheduler_output.scheduled_new_reqs:
            state = self._table.get(new.req_id)
            if state is not None:
                state.scheduled_once = True
        stats = self.lamps_stats
        for admission in self.kv_pauses.admitted(scheduler_output):
            stats.prefix_hit_tokens += admission.restored_tokens
            stats.recomputed_tokens += admission.recomputed_tokens
        self._batch.step_scheduled(scheduler_output.total_num_scheduled_tokens)
        self._sessions.on_scheduled(
            (r.req_id for r in scheduler_output.scheduled_new_reqs), self.requests
        )

    # ----- API pauses -------------------------------------------------------------------------

    def on_turn_end(self, request: Request) -> None:
        state = self._table.get(request.request_id)
        if state is not None:
            state.turn_output = request.num_output_tokens
            self.forecaster.observe_turn(state.hints.tool, request.num_output_tokens)

    def on_pause(self, request: Request) -> None:
        state = self._table.get(request.request_id)
        if state is not None:
            api_seconds = self.forecaster.api_seconds(state.hints)
            self._pause_policy.on_pause(request, state, self._clock(), api_seconds)

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        state = self._table.get(session.request_id)
        if state is None:
            return
        if state.pause_started is not None:
            seconds = self._clock() - state.pause_started
            self.forecaster.observe_call(
                state.hints.tool, seconds, len(update.prompt_token_ids or ())
            )
            self.lamps_stats.resumed += 1
            state.pause_started = None
            state.calls += 1
        state.strategy = None
        self._pause_policy.forget(session.request_id)
        state.hints = self._read_hints(session)
        self.kv_pauses.resume(session)

    # ----- logging ----------------------------------------------------------------------------

    @property
    def lamps_sessions(self) -> SessionParking:
        """The parked turns of stateless sessions (`lamps.vllm.sessions`)."""
        return self._sessions

    def _queues_summary(self) -> str:
        self._sessions.update_gauges()
        return (
            f"running={len(self.running)} "
            f"waiting={len(self.waiting) + len(self.kv_holding_waiting)} "
            f"paused={self.num_waiting_for_streaming_input}"
        )

    def update_from_output(self, *args: Any, **kwargs: Any) -> Any:
        busy = self.has_unfinished_requests()
        outputs = super().update_from_output(*args, **kwargs)
        if busy and not self.has_unfinished_requests():
            # Going idle: no step comes to print what happened since the last line.
            self._log.maybe_log(self._clock(), self._queues_summary(), force=True)
        return outputs

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        # vLLM refuses to reset while any block is in use: parked turns' pins must go first.
        self._sessions.release_all_pins()
        return super().reset_prefix_cache(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def make_stats(self, *args: Any, **kwargs: Any) -> Any:
        stats = super().make_stats(*args, **kwargs)  # type: ignore[misc]
        if stats is not None:
            # Carried to the front end for LAMPS' stat logger (lamps.vllm.prometheus).
            self._update_load_gauges()
            attach_stats_payload(stats, stats_payload(self.lamps_stats))
        return stats

    def _update_load_gauges(self) -> None:
        """Refresh the gauges that show routers this engine's load (docs/many-engines.md)."""
        self._sessions.update_gauges()
        stats = self.lamps_stats
        stats.pinned_blocks = self.kv_pauses.num_pinned_blocks
        stats.paused_requests = self.num_waiting_for_streaming_input
        waiting = len(self.waiting) + len(self.kv_holding_waiting)
        stats.queued_requests = waiting - self.num_waiting_for_streaming_input
        token_seconds = self.lamps_memory_over_time()
        # Exact in a double and far inside the int64 the stats travel as (inf and NaN: capped).
        stats.memory_over_time = round(token_seconds) if token_seconds < 2.0**53 else 2**53

    def shutdown(self) -> None:
        self._log.maybe_log(self._clock(), self._queues_summary(), force=True)
        super().shutdown()  # type: ignore[misc]


class LampsScheduler(_LampsMixin, AsyncScheduler):
    """LAMPS on vLLM's AsyncScheduler (vLLM's default async scheduling)."""


class LampsSyncScheduler(_LampsMixin, Scheduler):
    """LAMPS on vLLM's synchronous Scheduler (`--no-async-scheduling`, in-process replay)."""
