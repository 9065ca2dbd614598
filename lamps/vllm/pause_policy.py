"""LAMPS' decision at each API pause: keep, discard or swap the KV, whichever wastes least.

At a pause the waste of each strategy is computed from the predicted call duration and the
live batch (`lamps.choose_strategy`). A preserved pause gets a deadline at its predicted end;
a call still running then is re-decided, expecting it to last about as long again as it
already has. The KV itself is released through the pause mechanism (`lamps.vllm.pausing`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vllm.v1.request import Request

from lamps._core import PausedRequest, Strategy, choose_strategy
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.parking import is_paused
from lamps.vllm.pausing import KvPauses
from lamps.vllm.state import RequestState
from lamps.vllm.stats import LampsStats

logger = logging.getLogger("vllm.lamps")


class PauseController:
    """Applies the least-waste strategy to each pause and re-decides overrunning ones."""

    def __init__(
        self,
        pauses: KvPauses,
        batch: BatchEstimator,
        cost: Any,
        allow_swap: bool,
        free_blocks: Callable[[], int],
        stats: LampsStats,
    ) -> None:
        self._pauses = pauses
        self._batch = batch
        self._cost = cost
        self._allow_swap = allow_swap
        self._num_free_blocks = free_blocks
        self._stats = stats
        self._deadlines: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._swap_warned = False

    def decide(self, request: Request, api_seconds: float) -> Strategy:
        """The least-waste strategy for a pause of `api_seconds` starting now."""
        context = request.num_computed_tokens
        cached = self._batch.cached_tokens(context, self._num_free_blocks(), api_seconds)
        paused = PausedRequest(float(context), float(min(cached, context)), api_seconds)
        return choose_strategy(paused, self._batch.state, self._cost, self._allow_swap)

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
        if strategy == Strategy.PRESERVE:
            self._stats.preserved += 1
            state.strategy = Strategy.PRESERVE
            self._recheck(state.request_id, state.pause_epoch, now, api_seconds)
        else:
            self._release(request, state, strategy)

    def _recheck(self, request_id: str, epoch: int, now: float, after: float) -> None:
        deadline = now + max(after, self._batch.iteration_seconds())
        heapq.heappush(self._deadlines, (deadline, next(self._seq), request_id, epoch))

    def redecide_overdue(
        self, now: float, requests: Mapping[str, Request], states: Callable[[str], Any]
    ) -> None:
        """Re-decide the preserved pauses whose call outlasted its prediction."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, request_id, epoch = heapq.heappop(deadlines)
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
            self._release(request, state, strategy)

    def _release(self, request: Request, state: RequestState, strategy: Strategy) -> None:
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
