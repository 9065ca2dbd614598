"""RankingRequestQueue against vLLM's RequestQueue contract."""

from __future__ import annotations

from typing import Any

import pytest
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import RequestStatus

from lamps.harness import make_request
from lamps.mechanism.hints import Hints
from lamps.vllm.queue import RankingRequestQueue
from lamps.vllm.state import RequestTable


def make_queue(scores: dict[str, float], threshold: int = 0) -> tuple[RankingRequestQueue, Any]:
    table = RequestTable(capacity=2)
    queue = RankingRequestQueue(table, lambda r, st: scores[r.request_id], 1, threshold)

    def req(rid: str, **kw: Any) -> Any:
        r = make_request(rid, [1, 2, 3], **kw)
        table.add(rid, Hints())
        return r

    return queue, req


def test_implements_the_full_interface() -> None:
    assert issubclass(RankingRequestQueue, RequestQueue)
    queue, req = make_queue({"a": 3.0, "b": 1.0, "c": 2.0})
    a, b, c = req("a"), req("b"), req("c")
    assert not queue and len(queue) == 0
    with pytest.raises(IndexError):
        queue.peek_request()
    with pytest.raises(IndexError):
        queue.pop_request()
    for r in (a, b, c):
        queue.add_request(r)
    assert queue and len(queue) == 3
    assert [r.request_id for r in queue] == ["b", "c", "a"]
    assert queue.peek_request() is b
    queue.remove_request(c)
    with pytest.raises(ValueError, match="'c'"):
        queue.remove_request(c)
    assert [queue.pop_request().request_id for _ in range(2)] == ["b", "a"]
    queue.prepend_requests([a, b, c])
    queue.remove_requests([a, c])
    assert list(queue) == [b]


def test_skipped_requests_keep_rank_and_wait() -> None:
    queue, req = make_queue({"a": 1.0, "b": 2.0}, threshold=3)
    a, b = req("a"), req("b")
    queue.add_request(a)
    queue.add_request(b)
    for _ in range(3):
        queue.tick()
        # vLLM's scan skips both (pop) and puts them back (prepend) in the same step.
        skipped = [queue.pop_request(), queue.pop_request()]
        queue.prepend_requests(reversed(skipped))
    assert [r.request_id for r in queue] == ["a", "b"]
    # Their wait went on across the skips: after the threshold both are promoted.
    assert queue._q.is_promoted(0) and queue._q.is_promoted(1)


def test_preempted_request_starts_a_new_wait_at_its_arrival() -> None:
    queue, req = make_queue({"old": 5.0, "new": 5.0}, threshold=100)
    old, new = req("old", arrival_time=1.0), req("new", arrival_time=2.0)
    queue.add_request(old)
    assert queue.pop_request() is old  # admitted
    queue.tick()
    queue.add_request(new)
    queue.tick()
    queue.prepend_request(old)  # preempted later: equal score, earlier arrival goes first
    assert queue.peek_request() is old


def test_paused_sessions_are_parked() -> None:
    queue, req = make_queue({"p": 0.0, "w": 1.0})
    paused, ready = req("p", resumable=True), req("w")
    paused.status = RequestStatus.WAITING_FOR_STREAMING_REQ
    queue.add_request(paused)
    assert len(queue) == 1 and not queue  # counted, but nothing to schedule
    queue.add_request(ready)
    assert queue.pop_request() is ready
    assert list(queue) == [paused] and queue.holds_paused(paused)
    paused.status = RequestStatus.WAITING
    assert queue.resume(paused) and not queue.resume(paused)
    assert queue.pop_request() is paused
    queue.add_request(ready)
    ready.status = RequestStatus.WAITING_FOR_STREAMING_REQ
    queue.remove_requests([ready])
    assert len(queue) == 0
