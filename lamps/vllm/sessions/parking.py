"""Sessions across stateless turns: the gap between a session's requests is an API pause.

Over vLLM's OpenAI server every tool call ends the request and the next turn resends the whole
conversation as a new request. vLLM carries the conversation's identity to the scheduler
(`session_id` body field or `X-Session-ID` header, on `Request.session_id`); here a finished
request of a session *parks* its turn until the session's next request, and LAMPS applies its
least-waste choice to the parked KV, as for a streaming session's pause:
- **preserve**: the turn's full KV blocks are pinned (`KvPauses.pin`) so the prefix cache cannot
  evict them, for the predicted gap; a gap that overruns is re-decided, and `session_max_pin_s`
  caps it;
- **discard**: the blocks go to vLLM's evictable prefix cache, as without LAMPS;
- **swap**: the blocks are copied to host memory by the LAMPS swap connector, which loads them
  back when the next request's prefix lookup matches their hashes.
The next request of the session takes the blocks over through vLLM's own prefix lookup; once
it is scheduled the pin is dropped and the prefix tokens it recovered are counted. When an
allocation finds too few free blocks, pinned turns are given back by least waste before vLLM
preempts a running request; the parked memory is bounded (`session_max_parked_fraction`).
A session ends with the `session_end` hint, an abort (a request without a tool hint) or the
idle timeout (`session_idle_timeout_s`, to match a router's session expiry); its KV and its
history are then dropped. The history (turns, output lengths, gaps, returned tokens) also
forecasts the session's next turn for the ranking. This module keeps the session table and
makes the decisions; the pins themselves are kept by `lamps.vllm.sessions.pins`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from vllm.v1.request import Request, RequestStatus

from lamps._core import PausedRequest, Strategy, choose_strategy
from lamps.mechanism.capabilities import KeepsSessionTurns
from lamps.mechanism.hints import Hints
from lamps.mechanism.pausing import KvPauses
from lamps.vllm.batch import BatchEstimator
from lamps.vllm.counters import LampsStats
from lamps.vllm.predictors import Forecaster
from lamps.vllm.sessions.pins import SessionPins
from lamps.vllm.sessions.state import (
    ParkedTurn,
    Session,
    as_dict,
    matching_prefix,
)

logger = logging.getLogger("vllm.lamps")

PIN_PREFIX = "session:"


class SessionParking(SessionPins):
    """Parks finished session turns, applies the least-waste strategy, hands them over."""

    def __init__(
        self,
        pauses: KvPauses,
        batch: BatchEstimator,
        cost: Any,
        config: Any,
        stats: LampsStats,
        forecaster: Forecaster,
        block_size: int,
        total_blocks: int,
        free_blocks: Callable[[], int],
        swap: KeepsSessionTurns | None,
    ) -> None:
        self._pauses = pauses
        self._batch = batch
        self._cost = cost
        self._cfg = config
        self._stats = stats
        self._forecaster = forecaster
        self._block_size = block_size
        self._num_free_blocks = free_blocks
        self._swap = swap if config.allow_swap else None
        self._max_parked_blocks = int(config.session_max_parked_fraction * total_blocks)
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # by last activity
        self._takers: dict[str, Session] = {}  # next request id -> its session
        self._deadlines: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._pinned_blocks = 0
        self._in_cache: dict[str, ParkedTurn] = {}  # discarded turns that may be pinned again

    # ----- queries ------------------------------------------------------------------------------

    def session(self, session_id: str) -> Session | None:
        """The session's state, or None."""
        return self._sessions.get(session_id)

    @property
    def num_sessions(self) -> int:
        """Sessions tracked."""
        return len(self._sessions)

    @property
    def pinned_blocks(self) -> int:
        """KV blocks pinned for parked turns."""
        return self._pinned_blocks

    def forecast_hints(self, request: Request, hints: Hints) -> tuple[Hints, bool]:
        """The request's hints completed from its session's history; whether a gap follows."""
        sid = request.session_id
        session = self._sessions.get(sid) if sid else None
        if session is None:
            return hints, bool(sid) and not hints.session_end
        fill: dict[str, Any] = {}
        if hints.predicted_output_tokens is None and session.output.count:
            fill["predicted_output_tokens"] = round(session.output.value)
        if hints.predicted_api_seconds is None and session.gap.count:
            fill["predicted_api_seconds"] = session.gap.value
        if hints.api_return_tokens is None and session.returned.count:
            fill["api_return_tokens"] = round(session.returned.value)
        filled = Hints(**{**as_dict(hints), **fill}) if fill else hints
        return filled, not hints.session_end

    def history_key(self, request: Request, hints: Hints) -> tuple[str | None, int]:
        """The key a session's life is learned under (its first tool hint) and the calls it
        made so far (its finished turns)."""
        sid = request.session_id
        session = self._sessions.get(sid) if sid else None
        if session is None:
            return hints.tool, 0
        return session.first_tool or hints.tool, session.turns

    def reusable_tokens(self, request: Request) -> int:
        """Tokens of the request's prompt its session's parked turn still covers: pinned,
        intact in the prefix cache, or copied to host memory (loaded, not computed)."""
        sid = request.session_id
        session = self._sessions.get(sid) if sid else None
        parked = session.parked if session is not None else None
        if parked is None:
            return 0
        matched = matching_prefix(parked.hashes, request.block_hashes)
        if parked.strategy == Strategy.PRESERVE:
            matched = min(matched, parked.pinned)
        elif parked.strategy == Strategy.DISCARD:
            matched = min(matched, parked.intact())
        return matched * self._block_size

    # ----- events -------------------------------------------------------------------------------

    def on_arrival(self, request: Request, now: float) -> None:
        """A request with a session id arrived: it may take over the parked turn."""
        sid = request.session_id
        if sid is None or not self._cfg.sessions:
            return
        session = self._touch(sid, now)
        session.live.add(request.request_id)
        parked = session.parked
        if parked is not None and parked.taker is None:
            parked.taker = request.request_id
            self._takers[request.request_id] = session
            gap = max(now - parked.parked_at, 0.0)
            returned = max(request.num_prompt_tokens - parked.context, 0)
            session.gap.add(gap)
            session.returned.add(returned)
            self._forecaster.observe_call(parked.tool, gap, returned)

    def on_scheduled(self, new_request_ids: Iterable[str], requests: Any) -> None:
        """New requests were admitted: a taker takes its parked turn over and the pin goes."""
        if not self._takers:
            return
        for request_id in new_request_ids:
            session = self._takers.pop(request_id, None)
            if session is None or session.parked is None:
                continue
            parked = session.parked
            request = requests.get(request_id)
            if request is not None:
                matched = matching_prefix(parked.hashes, request.block_hashes)
                hit = request.num_computed_tokens // self._block_size
                stats = self._stats
                stats.takeovers += 1
                stats.parked_tokens += parked.tokens
                stats.recovered_tokens += min(matched, hit) * self._block_size
            self._drop(session, parked)

    def on_finishing(self, request: Request, hints: Hints, now: float) -> None:
        """A request is about to be freed (it still holds its blocks): park its turn or end."""
        sid = request.session_id
        if sid is None or not self._cfg.sessions:
            return
        session = self._touch(sid, now)
        session.live.discard(request.request_id)
        if self._takers.pop(request.request_id, None) is not None and session.parked:
            session.parked.taker = None  # never admitted: the turn waits for the next one
        self._stats.session_turns += 1
        aborted = request.status == RequestStatus.FINISHED_ABORTED
        tool_hinted = hints.tool is not None or hints.predicted_api_seconds is not None
        if session.turns == 0 and session.first_tool is None:
            session.first_tool = hints.tool
        if (
            hints.session_end
            or request.status == RequestStatus.FINISHED_ERROR
            or (aborted and not tool_hinted)
        ):
            # Stop strings reach the engine as aborts too: a request that announced a tool
            # call parks its turn; any other abort is a disconnect and ends the session.
            if hints.session_end and not aborted:
                # A session the client ended: its length teaches later sessions' forecasts.
                self._forecaster.observe_finish(
                    session.first_tool, session.turns, request.num_output_tokens
                )
            self.end(sid)
            return
        session.turns += 1
        session.output.add(request.num_output_tokens)
        self._park(session, request, hints, now)

    def before_step(self, now: float) -> None:
        """Expire idle sessions, re-decide overrunning pins, apply the hard cap."""
        timeout = self._cfg.session_idle_timeout_s
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if session.live or now - session.last_active < timeout:
                break
            self.end(sid)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, sid, epoch = heapq.heappop(deadlines)
            due = self._sessions.get(sid)
            parked = due.parked if due else None
            if parked is None or parked.epoch != epoch or parked.strategy != Strategy.PRESERVE:
                continue
            assert due is not None
            elapsed = now - parked.parked_at
            if elapsed >= self._cfg.session_max_pin_s:
                self._stats.cap_releases += 1
                self._unpin(parked, Strategy.DISCARD)
                continue
            if parked.taker is not None:
                continue  # the next request is here: it takes the blocks over when admitted
            # The gap is late: expect it to last about as long again as it already has.
            strategy = self._decide(parked.tokens, elapsed)
            if strategy == Strategy.PRESERVE:
                self._recheck(sid, parked, now, elapsed)
                continue
            self._stats.session_redecided += 1
            self._unpin(parked, strategy)
            if strategy == Strategy.DISCARD:
                self._in_cache[sid] = parked  # pinned again if the load makes it worth it

        if self._in_cache:
            self._revisit_cached(now)

    def end(self, session_id: str) -> None:
        """End a session: drop its parked turn and its history."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        if session.parked is not None:
            self._drop(session, session.parked)
        for request_id in list(self._takers):
            if self._takers[request_id] is session:
                del self._takers[request_id]
        self._stats.sessions_ended += 1

    def update_gauges(self) -> None:
        """Refresh the parked-session gauges of the stats (turns and their tokens by strategy)."""
        by = {Strategy.PRESERVE: 0, Strategy.DISCARD: 0, Strategy.SWAP: 0}
        tokens = dict.fromkeys(by, 0)
        for session in self._sessions.values():
            parked = session.parked
            if parked is not None:
                by[parked.strategy] += 1
                kept = parked.pinned * self._block_size  # a re-pin keeps what was intact
                tokens[parked.strategy] += kept if parked.pinned else parked.tokens
        stats = self._stats
        stats.parked_preserve = by[Strategy.PRESERVE]
        stats.parked_discard = by[Strategy.DISCARD]
        stats.parked_swap = by[Strategy.SWAP]
        stats.parked_kv_preserve = tokens[Strategy.PRESERVE]
        stats.parked_kv_discard = tokens[Strategy.DISCARD]
        stats.parked_kv_swap = tokens[Strategy.SWAP]
        stats.parked_blocks = self._pinned_blocks
        stats.sessions = len(self._sessions)

    # ----- internals ----------------------------------------------------------------------------

    def _touch(self, sid: str, now: float) -> Session:
        session = self._sessions.get(sid)
        if session is None:
            while len(self._sessions) >= self._cfg.max_sessions:
                oldest = next(iter(self._sessions))
                self.end(oldest)
            session = self._sessions[sid] = Session(sid)
        else:
            self._sessions.move_to_end(sid)
        session.last_active = now
        return session

    def _decide(self, tokens: int, gap: float) -> Strategy:
        cached = self._batch.cached_tokens(tokens, self._num_free_blocks(), gap)
        paused = PausedRequest(float(tokens), float(min(cached, tokens)), gap)
        return choose_strategy(paused, self._batch.state, self._cost, self._swap is not None)

    def _park(self, session: Session, request: Request, hints: Hints, now: float) -> None:
        if session.parked is not None:
            self._drop(session, session.parked)  # superseded by this newer turn
        frontier = request.num_computed_tokens - request.num_output_placeholders
        blocks = self._pauses.blocks_of(request, max(frontier, 0))
        hashes = list(request.block_hashes[: len(blocks)])
        blocks = blocks[: len(hashes)]
        if not blocks:
            return
        tokens = len(blocks) * self._block_size
        gap = self._forecaster.api_seconds(self.forecast_hints(request, hints)[0])
        epoch = next(self._seq)
        parked = ParkedTurn(PIN_PREFIX + session.session_id, Strategy.DISCARD, hashes, tokens,
                            request.num_tokens, now, gap, hints.tool, epoch, blocks=blocks,
                            block_keys=[b.block_hash for b in blocks])  # fmt: skip
        session.parked = parked
        strategy = self._decide(tokens, gap)
        if strategy == Strategy.PRESERVE and not self._make_room(len(blocks), now):
            self._stats.cap_releases += 1
            strategy = Strategy.DISCARD
        if strategy == Strategy.SWAP:
            assert self._swap is not None
            if self._swap.lamps_park_turn(parked.key, blocks, hashes):
                parked.strategy = Strategy.SWAP
                self._stats.session_swapped += 1
                self._stats.swapped_bytes += int(tokens * self._cost.kv_bytes_per_token)
                return
            self._stats.swap_fallbacks += 1
            strategy = Strategy.DISCARD
        if strategy == Strategy.PRESERVE:
            self._pin(session.session_id, parked, len(blocks), now, gap)
            self._stats.session_preserved += 1
            return
        self._stats.session_discarded += 1
        self._in_cache[session.session_id] = parked

    def _drop(self, session: Session, parked: ParkedTurn) -> None:
        if parked.strategy == Strategy.PRESERVE:
            self._unpin(parked, Strategy.DISCARD)
        elif parked.strategy == Strategy.SWAP and self._swap is not None:
            self._swap.lamps_drop_turn(parked.key)
        if parked.taker is not None:
            self._takers.pop(parked.taker, None)
        if self._in_cache.get(session.session_id) is parked:
            del self._in_cache[session.session_id]
        if session.parked is parked:
            session.parked = None
