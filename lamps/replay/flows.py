"""Where a replay's requests come from and when each turn starts: arrival flows.

The engine (``lamps.replay.engine``) asks its flow what to start first and what follows a
finished turn or conversation; the flow answers with events
(``Start``: a new conversation arrives; ``Resume``: a record's turn ``k`` starts at a time).

- ``ArrivalFlow``: arrivals known up front (Poisson ``--qps``); each segment starts after the
  previous one's API call, as the segment traces say.
- ``ConversationFlow``: the same for traced conversations, with their sub-agents: before a
  turn that a trace precedes with sub-agents (``type: subagent``), they start together as
  conversations of their own in the parent's trace instance, and the parent's turn waits for
  all of them, and for its own gap since its previous answer (kv-cache-tester's replay does
  the same: the parent pauses until its sub-agents complete, then its next request is due its
  delay after its previous one).
- ``UserLoop``: ``--users N``, closed loop: N users, each replaying one conversation (with its
  sub-agents) after another; a user starts its next trace the moment its conversation and all
  its sub-agents have finished. The traces are taken in a seeded random order (a fresh
  permutation each time the list is used up), so every policy replays the same sequence.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamps.replay.records import RequestRecord
from lamps.replay.tokens import SegmentTokens
from lamps.replay.traced_tokens import DEFAULT_WARM_PREFIX, TracedTokens
from lamps.workloads import Arrival, Workload, WorkloadRequest
from lamps.workloads.coding import TracedConversation


@dataclass(frozen=True)
class Start:
    """A new conversation arrives (the engine makes its record)."""

    arrival: Arrival


@dataclass(frozen=True)
class Resume:
    """``record``'s segment ``segment`` starts at ``time``."""

    record: RequestRecord
    segment: int
    time: float


Event = Start | Resume


class ArrivalFlow:
    """Arrivals known up front; each segment follows the previous one's API call."""

    def __init__(self, arrivals: Sequence[Arrival]) -> None:
        if not arrivals:
            raise ValueError("arrivals: nothing to replay")
        self.arrivals = list(arrivals)
        self.tokens: SegmentTokens | TracedTokens = SegmentTokens()

    def templates(self) -> list[WorkloadRequest]:
        """Every request template that may arrive (for the engine's max_model_len)."""
        return [a.request for a in self.arrivals]

    def initial(self) -> list[Arrival]:
        """The arrivals to schedule before the run starts."""
        return self.arrivals

    def segment_done(self, rec: RequestRecord, now: float) -> list[Event]:
        """A non-last segment has produced its last token."""
        seg = rec.arrival.request.segments[rec.segment]
        return [Resume(rec, rec.segment + 1, now + seg.api_seconds)]

    def finished(self, rec: RequestRecord, now: float) -> list[Event]:
        """A record's last segment has produced its last token."""
        self.tokens.release(rec)
        return []


class ConversationFlow(ArrivalFlow):
    """Traced conversations arriving at known times, with their sub-agents."""

    def __init__(
        self,
        arrivals: Sequence[Arrival],
        warm_prefix: float = DEFAULT_WARM_PREFIX,
        catalog: Sequence[TracedConversation] = (),
    ) -> None:
        super().__init__(arrivals)
        # Every conversation that may arrive (default: the arrivals'), sub-agents included.
        self.catalog = _conversations(catalog or [a.request for a in self.arrivals])
        self.traced = TracedTokens(self.catalog, warm_prefix)
        self.tokens = self.traced
        self._index = itertools.count(max(a.index for a in self.arrivals) + 1)
        self._scope: dict[int, int] = {}  # arrival index -> its trace instance
        self._children: dict[int, int] = {}  # parent arrival index -> sub-agents running
        self._parent: dict[int, RequestRecord | None] = {}  # sub-agent index -> parent record
        self._spawned: set[tuple[int, int]] = set()  # (arrival index, turn) already spawned
        self._due: dict[int, float] = {}  # parent index -> when its next turn is due
        self._number: dict[int, int] = {}  # arrival index -> which conversation of its instance
        for a in self.arrivals:
            self.adopt(a, a.index, None)

    def templates(self) -> list[WorkloadRequest]:
        return list(self.catalog)

    def adopt(
        self, arrival: Arrival, scope: int, parent: RequestRecord | None, number: int = 0
    ) -> None:
        """Registers a conversation that replays in trace instance ``scope`` (``number``: which
        of the instance's conversations it is)."""
        self._scope[arrival.index] = scope
        self._parent[arrival.index] = parent
        self._number[arrival.index] = number
        self.traced.register(arrival, scope, number)

    def _spawn(self, rec: RequestRecord, k: int, now: float) -> list[Event]:
        conv = rec.arrival.request
        assert isinstance(conv, TracedConversation)
        subs = conv.subagents_before(k)
        if not subs or (rec.arrival.index, k) in self._spawned:
            return []
        self._spawned.add((rec.arrival.index, k))
        events: list[Event] = []
        parent = rec.arrival.index
        for j, sub in enumerate(subs):
            arrival = Arrival(next(self._index), now, sub)
            number = hash((self._number[parent], k, j + 1))  # the same in every replay
            self.adopt(arrival, self._scope[parent], rec, number)
            events.append(Start(arrival))
        self._children[rec.arrival.index] = len(subs)
        return events

    def segment_done(self, rec: RequestRecord, now: float) -> list[Event]:
        (resume,) = super().segment_done(rec, now)
        assert isinstance(resume, Resume)
        spawned = self._spawn(rec, resume.segment, now)
        if not spawned:
            return [resume]
        self._due[rec.arrival.index] = resume.time
        return spawned

    def finished(self, rec: RequestRecord, now: float) -> list[Event]:
        super().finished(rec, now)
        spawned = self._spawn(rec, len(rec.arrival.request.segments), now)
        if spawned:  # sub-agents after the last turn: the trace instance goes on without it
            return spawned
        return self._child_done(rec, now)

    def _child_done(self, rec: RequestRecord, now: float) -> list[Event]:
        """Ends ``rec``'s part of its trace instance: a waiting parent may resume."""
        parent = self._parent.pop(rec.arrival.index, None)
        self._scope.pop(rec.arrival.index, None)
        self._number.pop(rec.arrival.index, None)
        if parent is None:
            return self.instance_done(rec, now) if rec.arrival.index not in self._children else []
        key = parent.arrival.index
        self._children[key] -= 1
        if self._children[key] > 0:
            return []
        del self._children[key]
        if parent.finished:  # they were spawned after its last turn
            return self._child_done(parent, now) if key in self._parent else []
        due = self._due.pop(key, now)
        return [Resume(parent, parent.segment + 1, max(now, due))]

    def instance_done(self, rec: RequestRecord, now: float) -> list[Event]:
        """A top-level conversation and all its sub-agents have finished."""
        return []


class UserLoop(ConversationFlow):
    """``users`` closed-loop users replaying traced conversations in a seeded order."""

    def __init__(
        self,
        workload: Workload,
        users: int,
        seed: int = 0,
        warm_prefix: float = DEFAULT_WARM_PREFIX,
    ) -> None:
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        convs = [r for r in workload.requests if isinstance(r, TracedConversation)]
        if len(convs) != len(workload.requests):
            raise ValueError(
                f"workload {workload.name!r}: --users replays traced conversations "
                "(kv-cache-tester format); this workload has other requests"
            )
        self.workload = workload
        self._rng = np.random.default_rng(seed)
        self._order: list[int] = []
        first = [Arrival(u, 0.0, self._next_trace()) for u in range(users)]
        super().__init__(first, warm_prefix, catalog=convs)
        self._user_of = {a.index: a.index for a in first}
        self.started = list(first)

    def _next_trace(self) -> TracedConversation:
        if not self._order:
            self._order = self._rng.permutation(len(self.workload.requests)).tolist()[::-1]
        conv = self.workload.requests[self._order.pop()]
        assert isinstance(conv, TracedConversation)
        return conv

    def instance_done(self, rec: RequestRecord, now: float) -> list[Event]:
        user = self._user_of.pop(rec.arrival.index)
        arrival = Arrival(next(self._index), now, self._next_trace())
        self._user_of[arrival.index] = user
        self.adopt(arrival, arrival.index, None)
        self.started.append(arrival)
        return [Start(arrival)]


def _conversations(requests: Sequence[WorkloadRequest]) -> list[TracedConversation]:
    """The traced conversations among ``requests``, sub-agents included."""
    return [c for r in requests if isinstance(r, TracedConversation) for c in r.all_conversations()]


def flow_for(arrivals: Sequence[Arrival], warm_prefix: float = DEFAULT_WARM_PREFIX) -> ArrivalFlow:
    """The flow of a list of arrivals: traced conversations get ``ConversationFlow``."""
    if any(isinstance(a.request, TracedConversation) for a in arrivals):
        return ConversationFlow(arrivals, warm_prefix)
    return ArrivalFlow(arrivals)
