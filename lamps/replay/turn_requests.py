"""The vLLM requests a replayed turn sends, in the policy's API mode (see ``engine``).

``stateless``: every turn is a new request carrying the turn's whole input, tagged with the
conversation's ``session_id``. ``session``: the first turn opens a streaming-input session; a
later turn resumes it with a chunk (the last sampled token, which vLLM drops from the paused
session, and the new input). When a turn's input does not extend the session's context (a
traced conversation compacted it, or dropped part of the previous answer), that session is
closed, as EngineCore closes one (a non-resumable request under its id), and the
conversation goes on in a new session, ``<id>~<turn>``, carrying the whole input; the new
session finds in the prefix cache whatever prefix the old one left there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamps.harness import make_request
from lamps.replay.modes import ApiMode

if TYPE_CHECKING:
    from collections.abc import Callable

    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.request import Request

    from lamps.replay.flows import ArrivalFlow
    from lamps.replay.policies import ReplayPolicy
    from lamps.replay.records import RequestRecord
    from lamps.replay.tokens import SeededHasher


class TurnRequests:
    """Adds each turn's request(s) to the scheduler and remembers which record owns them."""

    def __init__(
        self,
        scheduler: Scheduler,
        policy: ReplayPolicy,
        flow: ArrivalFlow,
        hasher: SeededHasher,
        block_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.scheduler = scheduler
        self.policy = policy
        self.tokens = flow.tokens
        self.hasher = hasher
        self.block_size = block_size
        self.clock = clock
        self.by_id: dict[str, RequestRecord] = {}

    def _request(
        self,
        rec: RequestRecord,
        request_id: str,
        tokens: list[int],
        *,
        resumable: bool,
        arrival_time: float,
    ) -> Request:
        seg = rec.arrival.request.segments[rec.segment]
        hints = self.policy.hints(rec.arrival, rec.segment)
        req = make_request(
            request_id,
            tokens,
            max_tokens=seg.output_tokens,
            extra_args={"lamps": hints} if hints is not None else None,
            resumable=resumable,
            arrival_time=arrival_time,
            hasher=self.hasher,
        )
        req.session_id = rec.arrival.request_id
        return req

    def _whole_input(
        self, rec: RequestRecord, req_id: str, *, resumable: bool, arrival_time: float
    ) -> None:
        """A request carrying the segment's whole input (a turn, or a new session)."""
        k = rec.segment
        shared = self.tokens.shared_hashes(rec, k, rec.vllm_request, self.block_size)
        self.hasher.seed(req_id, shared)
        tokens = self.tokens.prompt(rec, k)
        req = self._request(rec, req_id, tokens, resumable=resumable, arrival_time=arrival_time)
        rec.vllm_request = req
        self.by_id[req_id] = rec
        self.scheduler.add_request(req)

    def _close(self, request_id: str) -> None:
        """EngineCore closes a session with a non-resumable request under the same id."""
        closing = make_request(
            request_id, [0], max_tokens=1, arrival_time=self.clock(), hasher=self.hasher
        )
        self.scheduler.add_request(closing)

    def start(self, rec: RequestRecord) -> None:
        """Sends the record's current segment (``rec.segment``)."""
        now = self.clock()
        k = rec.segment
        last = k == len(rec.arrival.request.segments) - 1
        rec.segment_tokens = 0
        if self.policy.api_mode == ApiMode.STATELESS:
            arrival_time = rec.arrival.time if k == 0 else now
            req_id = f"{rec.arrival.request_id}.{k}"
            self._whole_input(rec, req_id, resumable=False, arrival_time=arrival_time)
            return
        if k == 0:
            req_id = rec.arrival.request_id
            self._whole_input(rec, req_id, resumable=not last, arrival_time=rec.arrival.time)
            return
        resumed_at = self.policy.resume_arrival_time(rec.arrival, now)
        session = rec.vllm_request
        assert session is not None
        chunk = self.tokens.chunk(rec, k)
        if chunk is None:
            rec.preemptions += session.num_preemptions
            self._close(session.request_id)
            req_id = f"{rec.arrival.request_id}~{k}"
            self._whole_input(rec, req_id, resumable=not last, arrival_time=resumed_at)
            return
        update = self._request(
            rec, session.request_id, chunk, resumable=True, arrival_time=resumed_at
        )
        self.scheduler.add_request(update)
        if last:
            self._close(session.request_id)
