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
gives back whatever survived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import PriorityRequestQueue
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
from lamps.vllm.swap import SwapOutDecision


def _cost_model(config: dict[str, Any]) -> CostModel:
    """Cost model from additional_config["infercept"]: {"profile": NAME} or {"cost_model": {}}."""
    if not isinstance(config, dict):
        raise ValueError(f"additional_config 'infercept' must be an object, got {config!r}")
    unknown = set(config) - {"profile", "cost_model"}
    if unknown:
        raise ValueError(f"additional_config 'infercept': unknown key(s) {sorted(unknown)}")
    if "cost_model" in config:
        try:
            return CostModel(**config["cost_model"])
        except TypeError as e:
            raise ValueError(f"additional_config 'infercept' field 'cost_model': {e}") from None
    name = config.get("profile", "gptj-6b-a100")
    if name not in CostModel.profiles():
        raise ValueError(
            f"additional_config 'infercept' field 'profile': unknown {name!r}; "
            f"known: {CostModel.profiles()}"
        )
    return CostModel.profile(name)


class ParkingPriorityQueue(PriorityRequestQueue):
    """vLLM's priority queue with paused sessions parked aside.

    ``schedule()`` pops and re-pushes every blocked (``WAITING_FOR_STREAMING_REQ``) request on
    every step only to skip it; with hundreds of sessions in API calls that heap churn
    dominates. Parked requests are exactly the ones it would skip, so scheduling is unchanged.
    ``len()`` counts them (vLLM's request counts stay right); truthiness and ``peek`` cover the
    schedulable ones only, as the scheduling loop expects.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parked: dict[str, Request] = {}

    def add_request(self, request: Request) -> None:
        """Parks a paused session; queues anything else by (priority, arrival)."""
        if request.status == RequestStatus.WAITING_FOR_STREAMING_REQ:
            self._parked[request.request_id] = request
        else:
            super().add_request(request)

    def prepend_request(self, request: Request) -> None:
        """Same as add_request: a priority queue has no front."""
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        """Same as add_request for each."""
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: Request) -> None:
        """Removes a queued or parked request."""
        if self._parked.get(request.request_id) is request:
            del self._parked[request.request_id]
        else:
            super().remove_request(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """Removes queued or parked requests."""
        requests = set(requests)
        for request in requests:
            if self._parked.get(request.request_id) is request:
                del self._parked[request.request_id]
        super().remove_requests(requests)

    def unpark(self, request: Request) -> bool:
        """Queues a parked session whose next input arrived; False if it was not parked here."""
        if self._parked.pop(request.request_id, None) is None:
            return False
        super().add_request(request)
        return True

    def __len__(self) -> int:
        return super().__len__() + len(self._parked)

    def __iter__(self) -> Iterator[Request]:
        yield from super().__iter__()
        yield from list(self._parked.values())


@dataclass
class _Pause:
    request: Request
    resume_at: float


class InferCeptScheduler(Scheduler):
    """vLLM Scheduler with InferCept's per-iteration discard of paused sessions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = ParkingPriorityQueue()
        self.kv_holding_waiting = ParkingPriorityQueue()
        self._clock: Callable[[], float] = time.monotonic
        self._cost = _cost_model(self.vllm_config.additional_config.get("infercept", {}))
        # Preserved pauses, and the computed context of discarded/swapped sessions until their
        # first admission after the call (vLLM may admit them as new or as resumed requests).
        self._pauses: dict[str, _Pause] = {}
        self._released: dict[str, int] = {}
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
        return super().schedule(*args, **kwargs)

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        self._last_tokens = scheduler_output.total_num_scheduled_tokens
        if self._released:
            scheduled = scheduler_output.num_scheduled_tokens
            for rid in [r for r in self._released if r in scheduled]:
                # Computed tokens at admission: what the prefix cache or the swap-in gave back.
                restored = min(self.requests[rid].num_computed_tokens, self._released.pop(rid))
                self._stats["prefix_hit_tokens"] += restored
        super()._update_after_schedule(scheduler_output)

    def _batch(self) -> BatchState:
        running = self.running
        held = float(sum(r.num_computed_tokens for r in running))
        return BatchState(float(max(self._last_tokens, len(running))), held)

    def _preserved(self) -> list[_Pause]:
        return [
            p
            for p in self._pauses.values()
            if p.request.status == RequestStatus.WAITING_FOR_STREAMING_REQ
        ]

    def _decide(self) -> None:
        now = self._clock()
        batch = self._batch()
        cost = self._cost
        keep: list[tuple[float, _Pause]] = []
        for p in self._preserved():
            context = float(p.request.num_computed_tokens)
            remaining = max(p.resume_at - now, 0.0)
            paused = PausedRequest(context, 0.0, remaining)
            if infercept_should_discard(paused, batch, cost):
                self._stats["discarded_tokens"] += p.request.num_computed_tokens
                self._discard(p)
                self._stats["discarded"] += 1
            else:
                keep.append((remaining * context, p))
        keep.sort(key=lambda x: x[0])
        if keep and hasattr(self.connector, "request_swap_out"):
            keep = self._swap(keep, batch)
        need = self._blocks_needed()
        free = self.kv_cache_manager.block_pool.get_num_free_blocks()
        if need <= free or not keep:
            return
        while keep and need > free:
            _, victim = keep.pop()
            free += len(self.kv_cache_manager.get_block_ids(victim.request.request_id)[0])
            self._stats["discarded_tokens"] += victim.request.num_computed_tokens
            self._discard(victim)
            self._stats["evicted"] += 1

    def _swap(
        self, keep: list[tuple[float, _Pause]], batch: BatchState
    ) -> list[tuple[float, _Pause]]:
        """Swaps out the most expensive pauses that fit this iteration's hidden-transfer budget."""
        cost = self._cost
        connector: Any = self.connector
        budget = infercept_swap_budget_tokens(batch, cost)
        now = self._clock()
        kept: list[tuple[float, _Pause]] = []
        for w_p, p in reversed(keep):
            context = p.request.num_computed_tokens
            paused = PausedRequest(float(context), 0.0, max(p.resume_at - now, 0.0))
            if (
                context > budget
                or swap_waste(paused, batch, cost) >= preserve_waste(paused, batch, cost)
                or connector.request_swap_out(p.request) != SwapOutDecision.ACCEPTED
            ):
                kept.append((w_p, p))
                continue
            budget -= context
            # The connector holds its own reference on the blocks until the copy has read them.
            self._discard(p)
            self._stats["swapped"] += 1
        kept.reverse()
        return kept

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

    def _discard(self, pause: _Pause) -> None:
        request = pause.request
        del self._pauses[request.request_id]
        self._released[request.request_id] = request.num_computed_tokens
        self.kv_holding_waiting.remove_request(request)
        self._free_request_blocks(request)
        request.num_computed_tokens = 0
        self.reset_preempted_req_ids.add(request.request_id)
        self.waiting.add_request(request)

    # ----- pause / resume bookkeeping ---------------------------------------------------------

    def _handle_stopped_request(self, request: Request) -> bool:
        finished = super()._handle_stopped_request(request)
        if not finished and request.status == RequestStatus.WAITING_FOR_STREAMING_REQ:
            args = request.sampling_params.extra_args if request.sampling_params else None
            hint = (args or {}).get("lamps", {}).get("predicted_api_seconds", 0.0)
            self._pauses[request.request_id] = _Pause(request, self._clock() + float(hint))
            self._stats["pauses"] += 1
        return finished

    def _update_request_as_session(self, session: Request, update: StreamingUpdate) -> None:
        self._pauses.pop(session.request_id, None)
        frontier = self._released.get(session.request_id)
        if frontier is None:
            super()._update_request_as_session(session, update)
            self._unpark(session)
            return
        # vLLM keeps the computed part of the last turn as context; after a discard that is the
        # context computed when the blocks were freed. The session stays in `waiting` and is
        # admitted with a prefix-cache lookup (or a swap-in).
        session.num_computed_tokens = frontier
        super()._update_request_as_session(session, update)
        session.num_computed_tokens = 0
        self._unpark(session)

    def _unpark(self, session: Request) -> None:
        if not self.kv_holding_waiting.unpark(session):  # type: ignore[attr-defined]
            self.waiting.unpark(session)  # type: ignore[attr-defined]

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        self._pauses.pop(request.request_id, None)
        self._released.pop(request.request_id, None)
        return super()._free_request(request, *args, **kwargs)
