"""Core microbenchmarks: LAMPS's C++ queue and batch re-score against pure-Python alternatives.

Run: pytest benchmarks/bench_core.py --benchmark-only
The summary at the end prints each alternative's median as a ratio to `lamps` (same run, same
machine), which is the figure to read on a shared, noisy machine.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from python_baseline import score as python_score
from vllm import SamplingParams
from vllm.v1.core.sched.request_queue import PriorityRequestQueue
from vllm.v1.request import Request

import lamps

SIZES = [1_000, 10_000, 100_000]
COST = lamps.CostModel.profile("gptj-6b-a100")
BATCH = lamps.BatchState(
    token_budget=2048,
    running_tokens_per_iteration=256,
    running_context_tokens=150_000,
    prefix_cache_hit_fraction=0.5,
)


class Workload:
    """n waiting requests, each with one predicted API call and a final segment."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.handles = np.arange(n, dtype=np.int64)
        self.arrival = np.sort(rng.uniform(0, 1800, n))
        self.context = rng.integers(50, 2000, n).astype(np.int64)
        self.pending = self.context.copy()  # waiting: nothing computed yet
        self.offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        self.output = rng.integers(1, 400, 2 * n).astype(np.int64)
        api = rng.choice([0.0001, 0.09, 0.7, 5.0, 30.0, 60.0], 2 * n)
        api[1::2] = 0.0  # the last segment has no call
        self.api = api
        self.returned = np.where(api > 0, rng.integers(1, 100, 2 * n), 0).astype(np.int64)
        self.strategy = np.full(2 * n, -1, dtype=np.int8)
        self.scores = np.empty(n)
        # The same data as Python objects, for the pure-Python baselines.
        self.py_requests = [
            (
                int(self.context[i]),
                int(self.pending[i]),
                [
                    (int(self.output[j]), float(self.api[j]), int(self.returned[j]))
                    for j in (2 * i, 2 * i + 1)
                ],
            )
            for i in range(n)
        ]

    def lamps_scores(self) -> np.ndarray:
        """All scores through the C++ batch path, in place."""
        return lamps.score_batch(
            self.context,
            self.pending,
            self.offsets,
            self.output,
            self.api,
            self.returned,
            self.strategy,
            BATCH,
            COST,
            True,
            self.scores,
        )

    def python_scores(self) -> list[float]:
        """All scores through the pure-Python closed form."""
        args = (
            BATCH.token_budget,
            BATCH.running_tokens_per_iteration,
            BATCH.running_context_tokens,
            BATCH.prefix_cache_hit_fraction,
            COST.a_ms_per_token,
            COST.c_ms,
            COST.kv_bytes_per_token,
            COST.link_bytes_per_second,
            COST.prefill_ms_per_token_pair,
            COST.kv_read_ms_per_token,
        )
        return [python_score(c, p, segs, *args) for c, p, segs in self.py_requests]


_workloads: dict[int, Workload] = {}


def workload(n: int) -> Workload:
    """Built once per size: setup is not what is measured."""
    if n not in _workloads:
        _workloads[n] = Workload(n)
    return _workloads[n]


def vllm_requests(w: Workload) -> list[Request]:
    """Real vLLM Request objects, ordered by (priority, arrival_time) like PriorityRequestQueue."""
    params = SamplingParams(max_tokens=16)
    return [
        Request(f"r{i}", [1, 2, 3], params, None, arrival_time=float(w.arrival[i]))
        for i in range(w.n)
    ]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["lamps", "heapq", "vllm_queue"])
def test_rescore_rerank(benchmark, impl: str, n: int) -> None:
    """Re-score every waiting request against the live batch, then restore rank order."""
    benchmark.group = f"rescore+rerank n={n}"
    w = workload(n)
    if impl == "lamps":
        queue = lamps.RankingQueue()
        for h in range(n):
            queue.push(h, 0.0, float(w.arrival[h]))

        def run() -> None:
            queue.update_many(w.handles, w.lamps_scores())

        benchmark(run)
        assert queue.peek() == int(np.lexsort((w.arrival, w.scores))[0])
    elif impl == "heapq":
        seq = list(range(n))
        arrival = w.arrival.tolist()

        def run() -> list:
            heap = list(zip(w.python_scores(), arrival, seq, strict=True))
            heapq.heapify(heap)
            return heap

        heap = benchmark(run)
        assert np.isclose(heap[0][0], w.lamps_scores().min())
    else:
        queue = PriorityRequestQueue()
        for request in vllm_requests(w):
            queue.add_request(request)
        requests = list(queue._heap)

        def run() -> None:
            for request, s in zip(requests, w.python_scores(), strict=True):
                request.priority = s  # vLLM's priority queue orders by (priority, arrival)
            heapq.heapify(queue._heap)

        benchmark(run)
        assert np.isclose(queue.peek_request().priority, w.lamps_scores().min())


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["lamps", "heapq", "vllm_queue"])
def test_push_then_pop_all(benchmark, impl: str, n: int) -> None:
    """Queue n requests by score, then pop them all in rank order."""
    benchmark.group = f"push+pop n={n}"
    w = workload(n)
    scores = w.lamps_scores().tolist()
    arrival = w.arrival.tolist()
    expected_first = int(np.lexsort((w.arrival, w.scores))[0])
    if impl == "lamps":
        queue = lamps.RankingQueue()

        def run() -> int:
            push = queue.push
            for h in range(n):
                push(h, scores[h], arrival[h])
            first = queue.pop()
            pop = queue.pop
            for _ in range(n - 1):
                pop()
            return first
    elif impl == "heapq":

        def run() -> int:
            heap: list = []
            push = heapq.heappush
            for h in range(n):
                push(heap, (scores[h], arrival[h], h))
            first = heapq.heappop(heap)[2]
            while heap:
                heapq.heappop(heap)
            return first
    else:
        requests = vllm_requests(w)
        for request, s in zip(requests, scores, strict=True):
            request.priority = s

        def run() -> int:
            queue = PriorityRequestQueue()
            for request in requests:
                queue.add_request(request)
            first = queue.pop_request()
            while queue:
                queue.pop_request()
            return int(first.request_id[1:])

    assert benchmark(run) == expected_first


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["lamps", "heapq", "vllm_queue"])
def test_rekey_hundred(benchmark, impl: str, n: int) -> None:
    """Change the score of 100 queued requests one at a time (e.g. after a pause or resume)."""
    benchmark.group = f"rekey 100 n={n}"
    w = workload(n)
    scores = w.lamps_scores().tolist()
    arrival = w.arrival.tolist()
    rng = np.random.default_rng(1)
    picks = rng.choice(n, 100, replace=False).tolist()
    new_scores = rng.uniform(0, max(scores), len(picks)).tolist()
    if impl == "lamps":
        queue = lamps.RankingQueue()
        for h in range(n):
            queue.push(h, scores[h], arrival[h])

        def run() -> None:
            update = queue.update
            for h, s in zip(picks, new_scores, strict=True):
                update(h, s)
    elif impl == "heapq":
        # The standard heapq re-key: mark the old entry dead, push a new one (lazy deletion).
        heap = [[scores[h], arrival[h], h, True] for h in range(n)]
        heapq.heapify(heap)
        live = {entry[2]: entry for entry in heap}
        counter = itertools.count()

        def run() -> None:
            for h, s in zip(picks, new_scores, strict=True):
                live[h][3] = False
                entry = [s, arrival[h] + next(counter) * 0.0, h, True]
                live[h] = entry
                heapq.heappush(heap, entry)
    else:
        queue = PriorityRequestQueue()
        requests = vllm_requests(w)
        for request, s in zip(requests, scores, strict=True):
            request.priority = s
            queue.add_request(request)

        def run() -> None:
            for h, s in zip(picks, new_scores, strict=True):
                queue.remove_request(requests[h])  # vLLM: list.remove + heapify, O(n)
                requests[h].priority = s
                queue.add_request(requests[h])

    benchmark.pedantic(
        run, rounds=5 if impl == "vllm_queue" and n == 100_000 else 20, warmup_rounds=1
    )
