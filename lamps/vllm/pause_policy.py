"""LAMPS' decision at each API pause: keep, discard or swap the KV, whichever wastes least.

At a pause the waste of each strategy is computed from the predicted call duration and the
live batch (`lamps.choose_strategy`). What happens next is configurable (`redecide`): by
default a preserved pause gets a deadline at its predicted end and a call still running then
is re-decided, expecting it to last about as long again as it already has; `every_step`
re-decides every preserved pause before each step with its remaining time (InferCept's way);
`demote` keeps every pause preserved at first and releases, before each step, all but the
costliest whose class is discard or swap (the authors' way). Swaps may be limited to what one
iteration's compute hides (`swap_policy`), first come or largest saving first; a swap that
does not fit takes the next-best strategy. The KV itself is released through the pause
mechanism (`lamps.mechanism.pausing`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vllm.v1.request import Request

from lamps._core import (
    PausedRequest,
    Strategy,
    choose_strategy,
    discard_waste,
    infercept_swap_budget_tokens,
    preserve_waste,
    swap_waste,
)
from lamps.mechanism.paused_queue import is_paused
from lamps.mechanism.pausing import KvPauses
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.counters import LampsStats
from lamps.vllm.state import RequestState
from lamps.vllm.switches import Redecide, SwapPolicy

logger = logging.getLogger("vllm.lamps")


class PauseController:
    """Applies the least-waste strategy to each pause and re-decides preserved ones."""

    def __init__(
        self,
        pauses: KvPauses,
        batch: BatchEstimator,
        cost: Any,
        free_blocks: Callable[[], int],
        stats: LampsStats,
        *,
        allow_swap: bool = True,
        redecide: Redecide = Redecide.OVERRUN,
        swap_policy: SwapPolicy = SwapPolicy.UNBUDGETED,
    ) -> None:
        self._pauses = pauses
        self._batch = batch
        self._cost = cost
        self._allow_swap = allow_swap
        self._redecide = redecide
        self._swap_policy = swap_policy
        self._num_free_blocks = free_blocks
        self._stats = stats
        self._deadlines: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._preserved: dict[str, tuple[Request, RequestState]] = {}
        self._swap_budget = 0
        self._swap_wanted: dict[str, tuple[Request, RequestState, float]] = {}
        self._granting = False
        self._swap_warned = False

    # ----- the decision -----------------------------------------------------------------------

    def _paused(self, request: Request, api_seconds: float) -> PausedRequest:
        context = request.num_computed_tokens
        cached = self._batch.cached_tokens(context, self._num_free_blocks(), api_seconds)
        return PausedRequest(float(context), float(min(cached, context)), api_seconds)

    def decide(
        self, request: Request, api_seconds: float, allow_swap: bool | None = None
    ) -> Strategy:
        """The least-waste strategy for a pause of `api_seconds` starting now."""
        swap = self._allow_swap if allow_swap is None else allow_swap
        paused = self._paused(request, api_seconds)
        return choose_strategy(paused, self._batch.state, self._cost, swap)

    def _swap_saving(self, request: Request, api_seconds: float) -> float:
        """Waste a swap saves over the best of preserve and discard."""
        paused = self._paused(request, api_seconds)
        batch = self._batch.state
        best_other = min(
            preserve_waste(paused, batch, self._cost), discard_waste(paused, batch, self._cost)
        )
        return best_other - swap_waste(paused, batch, self._cost)

    # ----- pauses -----------------------------------------------------------------------------

    def on_pause(
        self, request: Request, state: RequestState, now: float, api_seconds: float
    ) -> None:
        """A session starts waiting for its call to return (predicted `api_seconds`)."""
        state.pause_epoch += 1
        state.pause_started = now
        state.promoted = False
        state.predicted_api_seconds = api_seconds
        self._stats.pauses += 1
        strategy = self.decide(request, api_seconds)
        if strategy == Strategy.PRESERVE or self._redecide == Redecide.DEMOTE:
            self._stats.preserved += 1
            state.strategy = Strategy.PRESERVE
            state.pending_class = None if strategy == Strategy.PRESERVE else int(strategy)
            self._preserved[request.request_id] = (request, state)
            self._recheck(request.request_id, state.pause_epoch, now, api_seconds)
        else:
            self._release(request, state, strategy, api_seconds)

    @property
    def num_preserved(self) -> int:
        """Paused requests whose KV is kept on the GPU."""
        return len(self._preserved)

    def release_for_pressure(self, now: float) -> bool:
        """An allocation found too few free blocks: discard the preserved pause whose KV wastes
        most to keep (remaining call time x context). False when no pause holds KV.

        Discard, not swap: a copy frees no block before it has read it, and the blocks are
        needed now. With prefix caching a discard is partial by itself: the freed blocks stay
        cached, and vLLM's LRU free queue evicts the request's tail first and only as many
        blocks as allocations take; the rest is a prefix hit at resume.
        """
        victim: tuple[float, Request, RequestState] | None = None
        for request, state in self._preserved.values():
            held = request.num_computed_tokens
            if held <= 0:
                continue
            waste = self._remaining(state, now) * held
            if victim is None or waste > victim[0]:
                victim = (waste, request, state)
        if victim is None:
            return False
        _, request, state = victim
        self._stats.paused_pressure_releases += 1
        self._apply(request, state, Strategy.DISCARD)
        return True

    def forget(self, request_id: str) -> None:
        """The request left its pause (resumed or freed)."""
        self._preserved.pop(request_id, None)
        self._swap_wanted.pop(request_id, None)

    def _recheck(self, request_id: str, epoch: int, now: float, after: float) -> None:
        if self._redecide != Redecide.OVERRUN:
            return
        deadline = now + max(after, self._batch.iteration_seconds())
        heapq.heappush(self._deadlines, (deadline, next(self._seq), request_id, epoch))

    def before_step(
        self, now: float, requests: Mapping[str, Request], states: Callable[[str], Any]
    ) -> None:
        """Re-decide preserved pauses as `redecide` says; a new step's swap allowance."""
        self._swap_budget = infercept_swap_budget_tokens(self._batch.state, self._cost)
        if self._swap_wanted:
            self._grant_swaps()
        if self._redecide == Redecide.OVERRUN:
            self._redecide_overdue(now, requests, states)
        elif self._redecide == Redecide.EVERY_STEP:
            self._redecide_all(now)
        else:
            self._demote(now)

    def _redecide_overdue(
        self, now: float, requests: Mapping[str, Request], states: Callable[[str], Any]
    ) -> None:
        deadlines = self._deadlines
        due = []
        while deadlines and deadlines[0][0] <= now:
            due.append(heapq.heappop(deadlines))
        # Only what was due when the step began: a swap held back by its budget is re-checked
        # from its pause's start, i.e. now again, and would otherwise be re-decided forever.
        for _, _, request_id, epoch in due:
            state = states(request_id)
            request = requests.get(request_id)
            if (
                state is None
                or request is None
                or state.pause_epoch != epoch
                or state.strategy != Strategy.PRESERVE
                or not is_paused(request)
                or state.pause_started is None
            ):
                continue
            # The call is late: expect it to last about as long again as it already has.
            elapsed = now - state.pause_started
            strategy = self.decide(request, elapsed)
            if strategy == Strategy.PRESERVE:
                self._recheck(request_id, epoch, now, elapsed)
                continue
            self._stats.redecided += 1
            self._release(request, state, strategy, elapsed)

    def preserved_token_seconds(self, now: float) -> float:
        """KV memory over time the preserved pauses are expected to hold: context x rest of call."""
        total: float = sum(
            request.num_computed_tokens * self._remaining(state, now)
            for request, state in self._preserved.values()
        )
        return total

    def _remaining(self, state: RequestState, now: float) -> float:
        elapsed = now - (state.pause_started or now)
        left = state.predicted_api_seconds - elapsed
        # Overrun: expect it to last about as long again as it already has.
        return left if left > 0 else elapsed

    def _redecide_all(self, now: float) -> None:
        for request, state in list(self._preserved.values()):
            remaining = self._remaining(state, now)
            strategy = self.decide(request, remaining)
            if strategy != Strategy.PRESERVE:
                self._stats.redecided += 1
                self._release(request, state, strategy, remaining)

    def _demote(self, now: float) -> None:
        candidates = [
            (
                self._remaining(state, now) * request.num_computed_tokens,
                request,
                state,
                state.pending_class,
            )
            for request, state in self._preserved.values()
            if state.pending_class is not None
        ]
        if len(candidates) < 2:
            return
        candidates.sort(key=lambda c: c[0])
        for _, request, state, pending_class in candidates[:-1]:  # the costliest: the victim
            self._release(request, state, Strategy(pending_class), self._remaining(state, now))

    def _grant_swaps(self) -> None:
        """The allowance goes to the wanted swaps that save the most waste first."""
        wanted = sorted(
            self._swap_wanted.values(),
            key=lambda w: self._swap_saving(w[0], w[2]),
            reverse=True,
        )
        self._swap_wanted.clear()
        self._granting = True
        try:
            for request, state, api_seconds in wanted:
                self._release(request, state, Strategy.SWAP, api_seconds)
        finally:
            self._granting = False

    # ----- releasing ------------------------------------------------------------------------

    def _release(
        self, request: Request, state: RequestState, strategy: Strategy, api_seconds: float
    ) -> None:
        if (
            strategy == Strategy.SWAP
            and self._swap_policy == SwapPolicy.LARGEST_SAVING_FIRST
            and not (self._granting)
        ):
            # Held preserved until the next step hands out its allowance by saving.
            self._swap_wanted[request.request_id] = (request, state, api_seconds)
            self._keep(request, state, api_seconds)
            return
        if strategy == Strategy.SWAP and self._swap_policy != SwapPolicy.UNBUDGETED:
            if request.num_computed_tokens > self._swap_budget:
                strategy = self.decide(request, api_seconds, allow_swap=False)
                if strategy == Strategy.PRESERVE:
                    self._keep(request, state, api_seconds)
                    return
            else:
                self._swap_budget -= request.num_computed_tokens
        self._apply(request, state, strategy)

    def _apply(self, request: Request, state: RequestState, strategy: Strategy) -> None:
        """Release a paused session's KV by `strategy` (SWAP falls back to DISCARD)."""
        self._preserved.pop(request.request_id, None)
        state.pending_class = None
        if strategy == Strategy.SWAP:
            tokens = request.num_computed_tokens
            if self._pauses.swap(request):
                state.strategy = Strategy.SWAP
                self._stats.swapped += 1
                self._stats.swapped_bytes += int(tokens * self._cost.kv_bytes_per_token)
                return
            self._stats.swap_fallbacks += 1
            if not self._pauses.can_swap and not self._swap_warned:
                self._swap_warned = True
                logger.warning(
                    "LAMPS chose Swap for request %s but no swap path is configured "
                    "(the LAMPS swap connector, or vLLM's CPU KV offloading with "
                    "--kv-offloading-size); discarding instead. Set additional_config "
                    '{"lamps": {"allow_swap": false}} to stop choosing Swap. (Warned once.)',
                    request.request_id,
                )
        self._pauses.discard(request)
        state.strategy = Strategy.DISCARD
        self._stats.discarded += 1

    def _keep(self, request: Request, state: RequestState, api_seconds: float) -> None:
        """A swap that did not fit stays preserved (re-decided as `redecide` says)."""
        state.strategy = Strategy.PRESERVE
        state.pending_class = None
        if request.request_id not in self._preserved:
            self._preserved[request.request_id] = (request, state)
            self._stats.preserved += 1
        if state.pause_started is not None:
            self._recheck(request.request_id, state.pause_epoch, state.pause_started, api_seconds)
