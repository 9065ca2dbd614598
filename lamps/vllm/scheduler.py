"""LampsScheduler: vLLM's scheduler with LAMPS ordering, victim choice and API-pause strategies.

Nothing of vLLM's `schedule()` is copied. LAMPS acts through four attach points:
- the waiting queues (`waiting`, `kv_holding_waiting`) are RankingRequestQueues keyed by score;
- before each step the running list is sorted by score (promoted requests first), so vLLM's
  FCFS walk hands the token budget out in score order and its victim, `running[-1]`, is the
  running request with the largest score;
- when a streaming-input session pauses for an API call (`_handle_stopped_request`), the chosen
  strategy is applied: Preserve keeps the blocks, Discard/Swap free them;
- when the API result arrives (`_update_request_as_session`), the pause is measured and the
  session re-enters the ranked queue.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps._core import (
    BatchState,
    PausedRequest,
    Segment,
    Strategy,
    choose_strategy,
    score_batch,
    score_request,
)
from lamps.vllm.config import LampsConfig
from lamps.vllm.hints import parse_hints
from lamps.vllm.predictors import ApiDurationPredictor, KeyedRunningMean, OutputLengthPredictor
from lamps.vllm.queue import RankingRequestQueue
from lamps.vllm.state import RequestState, RequestTable
from lamps.vllm.strategies import estimate_cached_tokens

# A child of vLLM's logger, so `vllm serve` prints LAMPS lines with its format and level.
logger = logging.getLogger("vllm.lamps")

_WAITING_QUEUE_ID = 1
_KV_HOLDING_QUEUE_ID = 2
# vLLM's native CPU offloading connectors: they write KV through to host memory and load it
# back when a request's prefix is looked up, which is what a LAMPS swap needs.
_OFFLOADING_CONNECTORS = frozenset({"OffloadingConnector", "SimpleCPUOffloadConnector"})
# Longest gap between two steps still taken as one iteration's duration (idle gaps are not).
_MAX_ITERATION_SECONDS = 1.0


@dataclass
class LampsStats:
    """Cumulative counters of what the LAMPS scheduler did."""

    pauses: int = 0  # API pauses seen (session turns that ended waiting for input)
    preserved: int = 0  # pauses initially preserved
    discarded: int = 0  # discards applied (at pause or by a re-decision)
    swapped: int = 0  # swaps applied (at pause or by a re-decision)
    swap_fallbacks: int = 0  # swaps chosen without a swap path, discarded instead
    redecided: int = 0  # preserved pauses that outlasted their prediction and were re-decided
    resumed: int = 0  # pauses ended by an API result
    recomputed_tokens: int = 0  # context tokens recomputed after discard/swap
    prefix_hit_tokens: int = 0  # context tokens a discarded/swapped session got back from cache
    promotions: int = 0  # starvation promotions
    rescores: int = 0  # full re-scores of the waiting queues
    ranking_seconds: float = 0.0  # wall time spent in LAMPS bookkeeping before each step
    hint_warnings: int = 0  # invalid hint fields ignored

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict copy."""
        return asdict(self)


class _LampsMixin:
    """The LAMPS behaviour, mixed into vLLM's Scheduler or AsyncScheduler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = LampsConfig.load(self.vllm_config.additional_config)
        self.lamps_config = cfg
        self.lamps_stats = LampsStats()
        self._cost = cfg.make_cost_model()
        self._clock: Callable[[], float] = time.monotonic
        self._table = RequestTable()
        self._api_pred = ApiDurationPredictor(cfg.default_api_seconds)
        self._out_pred = OutputLengthPredictor(float(cfg.default_output_tokens))
        self._ret_pred = KeyedRunningMean(0.0)
        if self.policy != SchedulingPolicy.FCFS:
            logger.warning(
                "LAMPS orders requests by its own score; ignoring --scheduling-policy=%s",
                self.policy.value,
            )
            self.policy = SchedulingPolicy.FCFS
        threshold = cfg.starvation_threshold if cfg.ranking else 0
        self.waiting = RankingRequestQueue(
            self._table, self._lamps_score, _WAITING_QUEUE_ID, threshold
        )
        self.kv_holding_waiting = RankingRequestQueue(
            self._table, self._lamps_score, _KV_HOLDING_QUEUE_ID, threshold
        )
        self._prefix_caching = bool(self.cache_config.enable_prefix_caching)
        self._offloading = (
            self.connector is not None
            and type(self.connector).__name__ in _OFFLOADING_CONNECTORS
        )
        self._swap_warned = False
        # Sessions whose blocks a discard/swap freed, until their first admission afterwards.
        self._released: set[str] = set()
        self._batch = BatchState()
        self._batch_key_at_rescore: tuple[float, float, float] | None = None
        self._last_rescore_iteration = -(1 << 62)
        self._tokens_per_iteration = 0.0
        self._seconds_per_iteration: float | None = None
        self._last_step_at: float | None = None
        self._deadlines: list[tuple[float, int, str, int]] = []
        self._deadline_seq = itertools.count()
        self._last_log_at = self._clock()
        self._logged = LampsStats()
        logger.info("LAMPS scheduler %s: %s", type(self).__name__, cfg.as_dict())

    # ----- public surface -------------------------------------------------------------------

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use `clock()` (seconds) for pause durations and the log interval (default monotonic)."""
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._last_log_at = clock()
        self._last_step_at = None

    def lamps_state(self, request_id: str) -> RequestState | None:
        """LAMPS' side state of a live request (None once finished)."""
        return self._table.get(request_id)

    @property
    def lamps_num_tracked(self) -> int:
        """Requests LAMPS keeps side state for (equals the live requests)."""
        return len(self._table)

    # ----- scoring ----------------------------------------------------------------------------

    def _turn_prediction(self, request: Request, state: RequestState) -> tuple[int, float, int]:
        """(output tokens this turn, API seconds after it, tokens the API returns)."""
        h = state.hints
        turn = h.predicted_output_tokens
        if turn is None:
            turn = round(self._out_pred.predict(h.tool))
        if request.max_tokens is not None:
            turn = min(turn, request.max_tokens)
        if not request.resumable:
            return max(turn, 1), 0.0, 0
        api = h.predicted_api_seconds
        if api is None:
            api = self._api_pred.predict(h.tool)
        ret = h.api_return_tokens
        if ret is None:
            ret = round(self._ret_pred.predict(h.tool))
        return max(turn, 1), api, ret

    def _lamps_score(self, request: Request, state: RequestState) -> float:
        """Score one request against the live batch and store its score inputs."""
        if not self.lamps_config.ranking:
            # FCFS: equal scores fall back to arrival order.
            return 0.0
        turn, api, ret = self._turn_prediction(request, state)
        context = request.num_tokens
        pending = max(context - request.num_computed_tokens, 0)
        output = max(turn - request.num_output_tokens, 1)
        self._table.set_columns(state.slot, context, pending, output, api, ret, turn)
        return score_request(
            context, pending, [Segment(output, api, ret)], self._batch, self._cost,
            self.lamps_config.allow_swap,
        )

    def get_num_unfinished_requests(self) -> int:
        if self.pause_state == PauseState.PAUSED_NEW:
            # vLLM drains only the KV-holding queue here and subtracts every session waiting
            # for input, assuming all of them sit in it; a session whose KV LAMPS discarded or
            # swapped is parked in `waiting` instead.
            held = len(self.kv_holding_waiting) - self.kv_holding_waiting.num_parked
            return len(self.running) + held
        return super().get_num_unfinished_requests()

    # ----- before each step -------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        self._lamps_before_step()
        return super().schedule(*args, **kwargs)

    def _lamps_before_step(self) -> None:
        started = time.perf_counter()
        now = self._clock()
        if self._last_step_at is not None and self._tokens_per_iteration > 0:
            dt = now - self._last_step_at
            if 0 < dt <= _MAX_ITERATION_SECONDS:
                prev = self._seconds_per_iteration
                self._seconds_per_iteration = dt if prev is None else prev + 0.1 * (dt - prev)
        self._last_step_at = now
        self.lamps_stats.promotions += self.waiting.tick() + self.kv_holding_waiting.tick()
        running_scores = self._refresh_batch()
        self._redecide_overdue(now)
        if self.lamps_config.ranking:
            self._maybe_rescore()
            if running_scores is not None:
                order = np.argsort(running_scores, kind="stable")
                if (np.diff(order) != 1).any():
                    running = self.running
                    self.running[:] = [running[i] for i in order.tolist()]
        self.lamps_stats.ranking_seconds += time.perf_counter() - started
        self._maybe_log(now)

    def _iteration_seconds(self) -> float:
        if self._seconds_per_iteration is not None:
            return self._seconds_per_iteration
        return self._cost.iteration_seconds(self._tokens_per_iteration)

    def _alloc_blocks_per_second(self) -> float:
        return self._tokens_per_iteration / self.block_size / max(self._iteration_seconds(), 1e-9)

    def _refresh_batch(self) -> np.ndarray | None:
        """Rebuild the BatchState; return the running requests' scores (promoted = -inf)."""
        running = self.running
        n = len(running)
        table = self._table
        get = table.get
        states = [get(r.request_id) for r in running]
        slots = np.fromiter((st.slot for st in states), np.int64, n)
        context = np.fromiter((r.num_tokens for r in running), np.int64, n)
        computed = np.fromiter((r.num_computed_tokens for r in running), np.int64, n)
        produced = np.fromiter((r.num_output_tokens for r in running), np.int64, n)
        promoted = [i for i, st in enumerate(states) if st.promoted]
        held = float(computed.sum()) if n else 0.0
        fraction = 0.0
        if self._prefix_caching and n:
            mean_context = int(held / n)
            if mean_context >= self.block_size:
                cached = estimate_cached_tokens(
                    mean_context, self.block_size,
                    self.kv_cache_manager.block_pool.get_num_free_blocks(),
                    self._api_pred.predict(None), self._alloc_blocks_per_second(), True,
                )
                fraction = cached / mean_context
        self._batch = BatchState(self._tokens_per_iteration, held, fraction)
        if not n or not self.lamps_config.ranking:
            return None
        pending = np.maximum(context - computed, 0)
        output = np.maximum(table.turn[slots] - produced, 1)
        scores = score_batch(
            context, pending, np.arange(n + 1, dtype=np.int64), output,
            np.ascontiguousarray(table.api[slots]), np.ascontiguousarray(table.ret[slots]),
            np.full(n, -1, np.int8), self._batch, self._cost, self.lamps_config.allow_swap,
        )
        if promoted:
            scores[promoted] = -math.inf
        return scores

    def _maybe_rescore(self) -> None:
        cfg = self.lamps_config
        iteration = self.waiting.iteration
        if iteration - self._last_rescore_iteration < cfg.rescore_interval:
            return
        if not (self.waiting or self.kv_holding_waiting):
            return
        b = self._batch
        key = (
            b.running_tokens_per_iteration, b.running_context_tokens, b.prefix_cache_hit_fraction
        )
        last = self._batch_key_at_rescore
        tol = cfg.rescore_tolerance
        if last is not None and all(
            abs(x - y) <= tol * max(abs(y), 1.0) for x, y in zip(key, last, strict=True)
        ):
            return
        t = self._table
        n = t.num_slots()
        scores = score_batch(
            t.context[:n], t.pending[:n], t.offsets[: n + 1], t.output[:n], t.api[:n],
            t.ret[:n], t.strategy[:n], b, self._cost, cfg.allow_swap, out=t.scores[:n],
        )
        self.waiting.rescore(scores)
        self.kv_holding_waiting.rescore(scores)
        self._batch_key_at_rescore = key
        self._last_rescore_iteration = iteration
        self.lamps_stats.rescores += 1

    # ----- requests in and out ----------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:
            self._table.release(request.request_id)
            hints, warnings = parse_hints(
                request.sampling_params.extra_args if request.sampling_params else None,
                request.request_id, logger,
            )
            self.lamps_stats.hint_warnings += warnings
            self._table.add(request.request_id, hints)
        super().add_request(request)

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        result = super()._free_request(request, *args, **kwargs)
        # vLLM frees a request that stopped while preempted (async scheduling: its last token
        # was in flight) before it removes it from the waiting queues; take it out now, while
        # its slot is still ours, or it would stay ranked after the slot is recycled.
        self.waiting.discard(request)
        self.kv_holding_waiting.discard(request)
        self._table.release(request.request_id)
        self._released.discard(request.request_id)
        return result

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        # First admission after a discard/swap: count what the cache (or the host copy) gave
        # back and what has to be recomputed, and forget the frontier. Not only new requests:
        # vLLM admits a once-preempted request whose swap-in finished as a *resumed* one, and
        # a frontier left behind would rewind a live request at its next resume.
        if self._released:
            stats = self.lamps_stats
            scheduled = scheduler_output.num_scheduled_tokens
            for request_id in [r for r in self._released if r in scheduled]:
                self._released.discard(request_id)
                st = self._table.get(request_id)
                if st is None or st.frontier is None:
                    continue
                hit = min(self.requests[request_id].num_computed_tokens, st.frontier)
                stats.prefix_hit_tokens += hit
                stats.recomputed_tokens += st.frontier - hit
                st.frontier = None
        self._tokens_per_iteration = float(scheduler_output.total_num_scheduled_tokens)
        super()._update_after_schedule(scheduler_output)

    # ----- API pauses -------------------------------------------------------------------------

    def _handle_stopped_request(self, request: Request) -> bool:
        state = self._table.get(request.request_id)
        if state is not None:
            self._out_pred.observe(state.hints.tool, request.num_output_tokens)
        finished = super()._handle_stopped_request(request)
        if (
            not finished
            and state is not None
            and request.status == RequestStatus.WAITING_FOR_STREAMING_REQ
        ):
            self._on_pause(request, state)
        return finished

    def _predicted_api_seconds(self, state: RequestState) -> float:
        h = state.hints
        if h.predicted_api_seconds is not None:
            return h.predicted_api_seconds
        return self._api_pred.predict(h.tool)

    def _decide(self, request: Request, api_seconds: float) -> Strategy:
        """LAMPS' argmin of preserve / discard / swap waste for a pause of `api_seconds`."""
        context = request.num_computed_tokens
        cached = estimate_cached_tokens(
            context, self.block_size, self.kv_cache_manager.block_pool.get_num_free_blocks(),
            api_seconds, self._alloc_blocks_per_second(), self._prefix_caching,
        )
        paused = PausedRequest(float(context), float(min(cached, context)), api_seconds)
        return choose_strategy(paused, self._batch, self._cost, self.lamps_config.allow_swap)

    def _on_pause(self, request: Request, state: RequestState) -> None:
        now = self._clock()
        state.pause_epoch += 1
        state.pause_started = now
        state.promoted = False
        state.predicted_api_seconds = self._predicted_api_seconds(state)
        self.lamps_stats.pauses += 1
        strategy = self._decide(request, state.predicted_api_seconds)
        if strategy == Strategy.PRESERVE:
            self.lamps_stats.preserved += 1
            state.strategy = Strategy.PRESERVE
            self._schedule_recheck(state, now, state.predicted_api_seconds)
        else:
            self._drop_kv(request, state, strategy)

    def _schedule_recheck(self, state: RequestState, now: float, after: float) -> None:
        deadline = now + max(after, self._iteration_seconds())
        heapq.heappush(
            self._deadlines,
            (deadline, next(self._deadline_seq), state.request_id, state.pause_epoch),
        )

    def _redecide_overdue(self, now: float) -> None:
        """Re-decide preserved pauses that outlasted their predicted API time."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, request_id, epoch = heapq.heappop(deadlines)
            state = self._table.get(request_id)
            request = self.requests.get(request_id)
            if (
                state is None
                or request is None
                or state.pause_epoch != epoch
                or state.strategy != Strategy.PRESERVE
                or request.status != RequestStatus.WAITING_FOR_STREAMING_REQ
                or state.pause_started is None
            ):
                continue
            # The call is late: expect it to last about as long again as it already has.
            elapsed = now - state.pause_started
            strategy = self._decide(request, elapsed)
            if strategy == Strategy.PRESERVE:
                self._schedule_recheck(state, now, elapsed)
                continue
            self.lamps_stats.redecided += 1
            self._drop_kv(request, state, strategy)

    def _drop_kv(self, request: Request, state: RequestState, strategy: Strategy) -> None:
        """Apply Discard or Swap to a paused session."""
        if strategy == Strategy.SWAP:
            if self._swap_out(request):
                self._release_blocks(request, state)
                state.strategy = Strategy.SWAP
                self.lamps_stats.swapped += 1
                return
            self.lamps_stats.swap_fallbacks += 1
            if not self._swap_warned:
                self._swap_warned = True
                logger.warning(
                    "LAMPS chose Swap for request %s but no swap path is configured "
                    "(enable vLLM's CPU KV offloading with --kv-offloading-size); discarding "
                    "instead. Set additional_config {\"lamps\": {\"allow_swap\": false}} to "
                    "stop choosing Swap. (Warned once.)",
                    request.request_id,
                )
        self._release_blocks(request, state)
        state.strategy = Strategy.DISCARD
        self.lamps_stats.discarded += 1

    def _swap_out(self, request: Request) -> bool:
        """Hand the paused request's KV to a host copy; False when no swap path exists.

        A KV connector exposing `lamps_swap_out(request) -> bool` (the LAMPS swap connector)
        takes over: it is called while the request still holds its GPU blocks and returns
        True once it owns a host copy that its `get_num_new_matched_tokens` will load back at
        resume. Otherwise vLLM's native CPU offloading connector already holds a
        write-through copy, loaded back by the prefix lookup at resume.
        """
        hook = getattr(self.connector, "lamps_swap_out", None)
        if hook is not None:
            return bool(hook(request))
        return self._offloading

    def _release_blocks(self, request: Request, state: RequestState) -> None:
        """Free a paused session's GPU blocks; it resumes via a prefix lookup, like a preemption."""
        state.frontier = request.num_computed_tokens
        self._released.add(request.request_id)
        self.kv_holding_waiting.remove_request(request)
        self._free_request_blocks(request)
        self.encoder_cache_manager.free(request)
        self._inflight_prefills.discard(request)
        request.num_computed_tokens = 0
        self.reset_preempted_req_ids.add(request.request_id)
        self.waiting.add_request(request)

    def _update_request_as_session(self, session: Request, update: StreamingUpdate) -> None:
        state = self._table.get(session.request_id)
        released = state is not None and state.frontier is not None
        if released:
            # vLLM keeps the computed part of the last turn's output as context; after a
            # discard that is the context computed when the blocks were freed.
            session.num_computed_tokens = state.frontier
        super()._update_request_as_session(session, update)
        if state is None:
            return
        if released:
            session.num_computed_tokens = 0
        tool = state.hints.tool
        if state.pause_started is not None:
            self._api_pred.observe(tool, self._clock() - state.pause_started)
            self._ret_pred.observe(tool, len(update.prompt_token_ids or ()))
            self.lamps_stats.resumed += 1
            state.pause_started = None
        state.strategy = None
        hints, warnings = parse_hints(
            session.sampling_params.extra_args if session.sampling_params else None,
            session.request_id, logger,
        )
        state.hints = hints
        self.lamps_stats.hint_warnings += warnings
        if not self.kv_holding_waiting.unpark(session):
            self.waiting.unpark(session)

    # ----- logging ----------------------------------------------------------------------------

    def _maybe_log(self, now: float, force: bool = False) -> None:
        interval = self.lamps_config.log_interval_s
        if not force and (interval <= 0 or now - self._last_log_at < interval):
            return
        cur = self.lamps_stats
        prev = self._logged
        delta = {k: v - getattr(prev, k) for k, v in cur.as_dict().items()}
        self._last_log_at = now
        if not any(delta.values()):
            return
        self._logged = LampsStats(**cur.as_dict())
        logger.info(
            "LAMPS: running=%d waiting=%d paused=%d | pauses=%d preserve=%d discard=%d "
            "swap=%d swap_fallback=%d redecided=%d resumed=%d | recomputed_tokens=%d "
            "prefix_hit_tokens=%d | promotions=%d | ranking_ms=%.2f rescores=%d "
            "hint_warnings=%d",
            len(self.running), len(self.waiting) + len(self.kv_holding_waiting),
            self.num_waiting_for_streaming_input, delta["pauses"], delta["preserved"],
            delta["discarded"], delta["swapped"], delta["swap_fallbacks"], delta["redecided"],
            delta["resumed"], delta["recomputed_tokens"], delta["prefix_hit_tokens"],
            delta["promotions"], delta["ranking_seconds"] * 1e3, delta["rescores"],
            delta["hint_warnings"],
        )

    def shutdown(self) -> None:
        self._maybe_log(self._clock(), force=True)
        super().shutdown()


class LampsScheduler(_LampsMixin, AsyncScheduler):
    """LAMPS on vLLM's AsyncScheduler (vLLM's default async scheduling)."""


class LampsSyncScheduler(_LampsMixin, Scheduler):
    """LAMPS on vLLM's synchronous Scheduler (`--no-async-scheduling`, in-process replay)."""
