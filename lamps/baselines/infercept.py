"""InferCept (ICML 2024) as a vLLM V1 scheduler: the baseline LAMPS is compared with.

Every API pause starts as Preserve (vLLM's default for a streaming session). Before each step,
each preserved pause is re-evaluated with its *remaining* API time: it is discarded when
recomputing it would waste less than keeping it (``W_d < W_p``, the core's
``infercept_should_discard``). When the next step needs more blocks than are free, the preserved
pause that is most expensive to keep (largest ``W_p``) is evicted first, before vLLM would
preempt a running request. With a swap connector, preserved pauses whose swap waste is below
their preserve waste are swapped out, most expensive first, within the per-iteration budget
that one iteration's compute can hide (``infercept_swap_budget_tokens``). Queues are FCFS by
original arrival (vLLM's ``priority`` policy with equal priorities and the first chunk's
arrival time carried on every chunk). InferCept's model has no prefix cache, so its waste
estimates assume a discarded context is recomputed in full; the engine's prefix cache still
gives back whatever survived. The KV is released through the same mechanism LAMPS uses
(`lamps.vllm.pausing`); only the decisions are InferCept's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps import (
    BatchState,
    CostModel,
    PausedRequest,
    infercept_should_discard,
    infercept_swap_budget_tokens,
    preserve_waste,
    swap_waste,
)
from lamps.vllm.compat import SchedulerHooks
from lamps.vllm.config import LampsConfig, served_kv_bytes_per_token
from lamps.vllm.hints import parse_hints
from lamps.vllm.parking import ParkingPriorityQueue, is_paused
from lamps.vllm.pausing import KvPauses

logger = logging.getLogger("vllm.lamps.infercept")

CONFIG_KEY = "infercept"
"""`additional_config["infercept"]`: `{"profile": NAME}` or `{"cost_model": {...}}`."""


def cost_model_for(config: Any, kv_bytes_per_token: float | None) -> CostModel:
    """The cost model `additional_config["infercept"]` names (the LAMPS config's schema)."""
    if not isinstance(config, dict):
        raise ValueError(f"additional_config '{CONFIG_KEY}' must be an object, got {config!r}")
    unknown = set(config) - {"profile", "cost_model"}
    if unknown:
        raise ValueError(f"additional_config '{CONFIG_KEY}': unknown key(s) {sorted(unknown)}")
    try:
        settings = LampsConfig.from_mapping(config)
    except ValueError as e:
        raise ValueError(f"additional_config '{CONFIG_KEY}': {e}") from None
    return settings.make_cost_model(kv_bytes_per_token)  # type: ignore[no-any-return]


@dataclass
class _Pause:
    request: Request
    resume_at: float


class InferCeptScheduler(SchedulerHooks, Scheduler):
    """vLLM Scheduler with InferCept's per-iteration discard, swap and eviction of pauses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = ParkingPriorityQueue()
        self.kv_holding_waiting = ParkingPriorityQueue()
        self._clock: Callable[[], float] = time.monotonic
        self._cost = cost_model_for(
            self.vllm_config.additional_config.get(CONFIG_KEY, {}),
            served_kv_bytes_per_token(self.kv_cache_config),
        )
        self.kv_pauses = KvPauses(self)
        self._pauses: dict[str, _Pause] = {}  # preserved pauses
        self._last_tokens = 0
        self._stats = {
            "pauses": 0,
            "discarded": 0,
            "evicted": 0,
            "swapped": 0,
            "discarded_tokens": 0,
            "prefix_hit_tokens": 0,
        }

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Replaces the wall clock (a replay passes its virtual clock)."""
        self._clock = clock

    def infercept_stats(self) -> dict[str, Any]:
        """Cumulative counters: pauses, discards, swaps, pressure evictions, tokens dropped."""
        return dict(self._stats)

    # ----- the decision -----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        if self._pauses:
            self._decide()
        return super().schedule(*args, **kwargs)  # type: ignore[no-any-return]

    def _batch(self) -> BatchState:
        running = self.running
        held = float(sum(r.num_computed_tokens for r in running))
        return BatchState(float(max(self._last_tokens, len(running))), held)

    def _decide(self) -> None:
        now = self._clock()
        batch = self._batch()
        keep: list[tuple[float, _Pause]] = []
        for p in [p for p in self._pauses.values() if is_paused(p.request)]:
            context = float(p.request.num_computed_tokens)
            remaining = max(p.resume_at - now, 0.0)
            if infercept_should_discard(PausedRequest(context, 0.0, remaining), batch, self._cost):
                self._drop(p, "discarded")
            else:
                keep.append((remaining * context, p))
        keep.sort(key=lambda x: x[0])
        if keep and self.kv_pauses.can_swap:
            keep = self._swap(keep, batch, now)
        need = self._blocks_needed()
        free = self.kv_cache_manager.block_pool.get_num_free_blocks()
        while keep and need > free:
            _, victim = keep.pop()
            free += len(self.kv_cache_manager.get_block_ids(victim.request.request_id)[0])
            self._drop(victim, "evicted")

    def _swap(
        self, keep: list[tuple[float, _Pause]], batch: BatchState, now: float
    ) -> list[tuple[float, _Pause]]:
        """Swaps out the most expensive pauses that fit this iteration's hidden-transfer budget."""
        budget = infercept_swap_budget_tokens(batch, self._cost)
        kept: list[tuple[float, _Pause]] = []
        for w_p, p in reversed(keep):
            context = p.request.num_computed_tokens
            paused = PausedRequest(float(context), 0.0, max(p.resume_at - now, 0.0))
            if (
                context > budget
                or swap_waste(paused, batch, self._cost)
                >= preserve_waste(paused, batch, self._cost)
                or not self.kv_pauses.swap(p.request)
            ):
                kept.append((w_p, p))
                continue
            budget -= context
            del self._pauses[p.request.request_id]
            self._stats["swapped"] += 1
        kept.reverse()
        return kept

    def _drop(self, pause: _Pause, counter: str) -> None:
        """Discard a preserved pause's KV (`counter`: a re-decision or a pressure eviction)."""
        request = pause.request
        del self._pauses[request.request_id]
        self._stats["discarded_tokens"] += request.num_computed_tokens
        self._stats[counter] += 1
        self.kv_pauses.discard(request)

    def _blocks_needed(self) -> int:
        """Blocks the next step needs: a new block per running request at a block boundary,
        plus the whole sequence of the waiting head (vLLM reserves the full input)."""
        bs = self.block_size
        need = sum(1 for r in self.running if r.num_computed_tokens % bs == 0)
        for queue in (self.kv_holding_waiting, self.waiting):
            if queue:
                r = queue.peek_request()
                if r.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED):
                    need += -(-(r.num_tokens - r.num_computed_tokens) // bs)
                break
        return need

    # ----- vLLM's events ----------------------------------------------------------------------

    def on_pause(self, request: Request) -> None:
        hints, _ = parse_hints(
            request.sampling_params.extra_args if request.sampling_params else None,
            request.request_id, logger,
        )  # fmt: skip
        api_seconds = hints.predicted_api_seconds or 0.0
        self._pauses[request.request_id] = _Pause(request, self._clock() + api_seconds)
        self._stats["pauses"] += 1

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        self._pauses.pop(session.request_id, None)
        self.kv_pauses.unpark(session)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        self._last_tokens = scheduler_output.total_num_scheduled_tokens
        for admission in self.kv_pauses.admitted(scheduler_output):
            self._stats["prefix_hit_tokens"] += admission.restored_tokens

    def on_freed(self, request: Request) -> None:
        self._pauses.pop(request.request_id, None)
        self.kv_pauses.forget(request.request_id)
