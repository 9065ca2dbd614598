"""RankingQueue against a sorted-list model, including starvation promotion."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import lamps

handles = st.integers(0, 63)
scores = st.floats(-1e6, 1e6, allow_nan=False)
arrivals = st.integers(0, 20).map(float)
# A request's own wait before promotion: the queue's default, a custom one, or never.
waits = st.one_of(st.none(), st.integers(0, 8), st.just(lamps.RankingQueue.never))


class QueueMachine(RuleBasedStateMachine):
    """Random push / pop / erase / update / update_many / tick against the reference ordering."""

    def __init__(self) -> None:
        super().__init__()
        self.threshold = 5
        self.queue = lamps.RankingQueue(self.threshold)
        self.seq = 0
        self.iteration = 0
        # handle -> (score, arrival, seq), waiting_since and own wait for unpromoted;
        # promoted separately.
        self.entries: dict[int, tuple[float, float, int]] = {}
        self.since: dict[int, int] = {}
        self.wait: dict[int, int | None] = {}
        self.promoted: dict[int, tuple[int, float, int]] = {}

    def _starved(self, h: int) -> bool:
        wait = self.threshold if self.wait[h] is None else self.wait[h]
        return wait != lamps.RankingQueue.never and self.iteration - self.since[h] >= wait

    def _promote_starved(self) -> int:
        starved = [h for h in self.entries if self._starved(h)]
        for h in starved:
            _, arrival, seq = self.entries.pop(h)
            self.wait.pop(h)
            self.promoted[h] = (self.since.pop(h), arrival, seq)
        return len(starved)

    @rule(handle=handles, score=scores, arrival=arrivals, wait=waits)
    def push(self, handle: int, score: float, arrival: float, wait: int | None) -> None:
        if handle in self.entries or handle in self.promoted:
            with pytest.raises(ValueError, match="already queued"):
                self.queue.push(handle, score, arrival, starve_after=wait)
            return
        self.queue.push(handle, score, arrival, starve_after=wait)
        self.entries[handle] = (score, arrival, self.seq)
        self.since[handle] = self.iteration
        self.wait[handle] = wait
        self.seq += 1
        self._promote_starved()  # a wait of 0 promotes at once

    @rule()
    def pop(self) -> None:
        order = ref.ranked(self.entries, self.promoted)
        if not order:
            with pytest.raises(IndexError):
                self.queue.pop()
            return
        assert self.queue.pop() == order[0]
        self._forget(order[0])

    @rule(handle=handles)
    def erase(self, handle: int) -> None:
        if handle not in self.entries and handle not in self.promoted:
            with pytest.raises(KeyError):
                self.queue.erase(handle)
            return
        self.queue.erase(handle)
        self._forget(handle)

    @rule(handle=handles, score=scores)
    def update(self, handle: int, score: float) -> None:
        if handle in self.entries:
            self.queue.update(handle, score)
            _, arrival, seq = self.entries[handle]
            self.entries[handle] = (score, arrival, seq)
        elif handle in self.promoted:
            self.queue.update(handle, score)  # stored, but order among promoted is by age
            assert self.queue.score(handle) == score
        else:
            with pytest.raises(KeyError):
                self.queue.update(handle, score)

    @precondition(lambda self: self.entries)
    @rule(data=st.data())
    def update_many(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.entries)), min_size=1))
        new = data.draw(st.lists(scores, min_size=len(chosen), max_size=len(chosen)))
        self.queue.update_many(np.array(chosen, dtype=np.int64), np.array(new, dtype=np.float64))
        for h, s in zip(chosen, new, strict=True):
            _, arrival, seq = self.entries[h]
            self.entries[h] = (s, arrival, seq)

    @rule(steps=st.integers(0, 4))
    def tick(self, steps: int) -> None:
        self.iteration += steps
        assert self.queue.tick(steps) == self._promote_starved()

    def _forget(self, handle: int) -> None:
        self.entries.pop(handle, None)
        self.since.pop(handle, None)
        self.wait.pop(handle, None)
        self.promoted.pop(handle, None)

    @invariant()
    def same_order(self) -> None:
        assert self.queue.ranked() == ref.ranked(self.entries, self.promoted)
        assert len(self.queue) == len(self.entries) + len(self.promoted)
        for h in self.promoted:
            assert self.queue.is_promoted(h)
        for h in self.entries:
            assert self.queue.waiting_since(h) == self.since[h]


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


def test_ranked_does_not_mutate() -> None:
    """ranked() twice gives the same order and leaves the size alone."""
    q = lamps.RankingQueue()
    for h, s in enumerate([3.0, 1.0, 2.0]):
        q.push(h, s, 0.0)
    assert q.ranked() == q.ranked() == [1, 2, 0]
    assert len(q) == 3


def test_promoted_request_reinserted_stays_ahead() -> None:
    """A preempted promoted request pushed back with promoted=True keeps its boost."""
    q = lamps.RankingQueue(2)
    q.push(0, 100.0, 0.0)
    q.tick(2)
    assert q.is_promoted(0)
    since = q.waiting_since(0)
    q.erase(0)
    q.push(1, 0.0, 1.0)
    q.push(0, 100.0, 0.0, waiting_since=since, promoted=True)
    assert q.ranked() == [0, 1]


def test_none_threshold_disables_starvation_prevention() -> None:
    """starvation_threshold=None never promotes."""
    q = lamps.RankingQueue(None)
    q.push(0, 5.0, 0.0)
    assert q.tick(10**9) == 0
    assert not q.is_promoted(0)


def test_a_request_may_wait_its_own_time_or_never_be_promoted() -> None:
    """`starve_after` overrides the queue's threshold per request; `never` opts out."""
    q = lamps.RankingQueue(10)
    q.push(0, 9.0, 0.0, starve_after=2)
    q.push(1, 8.0, 1.0, starve_after=lamps.RankingQueue.never)
    q.push(2, 7.0, 2.0)
    assert q.tick(2) == 1 and q.is_promoted(0)
    assert q.tick(10**12) == 1 and q.is_promoted(2) and not q.is_promoted(1)
    assert q.ranked() == [0, 2, 1]
    with pytest.raises(ValueError, match="starve_after"):
        q.push(3, 1.0, 0.0, starve_after=-1)


def test_promoted_requests_take_one_pop_in_share() -> None:
    """With promoted_share 3, starved requests get every third pop while ranked ones wait:
    under overload the queue keeps its ranking for two pops in three, and the oldest starved
    request still goes out within three pops."""
    q = lamps.RankingQueue(5, promoted_share=3)
    for h in (10, 11):  # old, large scores: they will starve
        q.push(h, 1000.0 + h, float(h))
    q.tick(5)
    for h in range(6):  # fresh, small scores
        q.push(h, float(h), 100.0 + h)
    assert q.is_promoted(10) and q.is_promoted(11)
    order = q.ranked()
    assert order == [0, 1, 10, 2, 3, 11, 4, 5]
    assert [q.pop() for _ in range(8)] == order


def test_share_one_keeps_promoted_requests_first() -> None:
    """promoted_share 1 (the default) is the paper's rule: every promoted request goes first."""
    q = lamps.RankingQueue(1)
    q.push(7, 50.0, 0.0)
    q.tick(1)
    q.push(1, 1.0, 1.0)
    assert q.promoted_share == 1
    assert [q.pop(), q.pop()] == [7, 1]


def test_promoted_share_must_be_positive() -> None:
    """A share of 0 would never serve a starved request: refused, named."""
    with pytest.raises(ValueError, match="promoted_share"):
        lamps.RankingQueue(10, promoted_share=0)
