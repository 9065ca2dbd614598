"""The simulated swap worker: link timing on a caller's clock, host-copy bookkeeping, failures."""

from __future__ import annotations

import pytest

from lamps.connector import (
    LampsSwapMetadata,
    LampsSwapWorkerMetadata,
    SwapInJob,
    SwapOutJob,
    SwapWorker,
)
from lamps.connector.messages import SwapJob
from lamps.harness import SettableClock
from lamps.replay.simulated_swap_worker import SimulatedSwapWorker


def out(request_id: str, num_blocks: int) -> SwapOutJob:
    return SwapOutJob(request_id, list(range(num_blocks)))


def load(request_id: str, num_blocks: int) -> SwapInJob:
    return SwapInJob(request_id, list(range(num_blocks)), 0)


def step(
    worker: SwapWorker, meta: LampsSwapMetadata, finished: set[str] | None = None
) -> tuple[dict[str, tuple[int, int]], set[str], set[str]]:
    """One step through the protocol: (swap-out results, finished loads, failed loads)."""
    worker.start_jobs(meta)
    results = worker.collect_finished(finished or set())
    worker_meta = worker.take_worker_metadata()
    outs = worker_meta.swap_out_results if worker_meta is not None else {}
    return outs, results.finished_recving, results.failed_recving


def make(clock: SettableClock, **kwargs: object) -> SimulatedSwapWorker:
    return SimulatedSwapWorker(clock, lambda blocks: float(blocks), **kwargs)  # type: ignore[arg-type]


def test_copies_run_one_at_a_time_per_direction() -> None:
    clock = SettableClock()
    worker = make(clock)
    assert step(worker, LampsSwapMetadata(swap_out=[out("a", 2), out("b", 3)])) == (
        {},
        set(),
        set(),
    )
    assert worker.next_end() == 2.0
    clock.now = 2.0
    assert step(worker, LampsSwapMetadata()) == ({"a": (1, 0)}, set(), set())
    assert worker.next_end() == 5.0  # b waited for the link: 2 + 3
    # The other direction has its own link: a's load starts now, beside b's copy.
    assert step(worker, LampsSwapMetadata(swap_in=[load("a", 1)])) == ({}, set(), set())
    assert worker.next_end() == 3.0
    clock.now = 5.0
    assert step(worker, LampsSwapMetadata()) == ({"b": (1, 0)}, {"a"}, set())
    assert (worker.num_in_flight, worker.num_stored, worker.next_end()) == (0, 1, None)
    assert worker.blocks_started == {"out": 5, "in": 1}


def test_injected_failures_and_the_engines_bookkeeping() -> None:
    clock = SettableClock()
    failing = {"x"}

    def fails(job: SwapJob) -> bool:
        return job.request_id in failing

    worker = make(clock, fails=fails)
    step(worker, LampsSwapMetadata(swap_out=[out("x", 1), out("y", 1)]))
    clock.now = 10.0
    assert step(worker, LampsSwapMetadata())[0] == {"x": (0, 1), "y": (1, 0)}
    assert worker.num_stored == 1  # a failed swap-out leaves no copy
    # No copy: the load fails at once; a second swap-out over a copy fails at once.
    meta = LampsSwapMetadata(swap_out=[out("y", 1)], swap_in=[load("x", 1)])
    assert step(worker, meta) == ({"y": (0, 1)}, {"x"}, {"x"})
    # A load that fails keeps the copy (as the swap engine does) until it is released.
    failing.add("y")
    step(worker, LampsSwapMetadata(swap_in=[load("y", 1)]))
    clock.now = 20.0
    assert step(worker, LampsSwapMetadata()) == ({}, {"y"}, {"y"})
    assert worker.num_stored == 1
    step(worker, LampsSwapMetadata(release=["y"]))
    assert worker.num_stored == 0


def test_stopped_copies_hold_their_link_and_report_failed() -> None:
    clock = SettableClock()
    worker = make(clock)
    step(worker, LampsSwapMetadata(swap_out=[out("a", 4), out("b", 1)]))
    step(worker, LampsSwapMetadata(release=["a"]))
    clock.now = 4.0
    assert step(worker, LampsSwapMetadata())[0] == {"a": (0, 1)}  # b is still behind a
    clock.now = 5.0
    assert step(worker, LampsSwapMetadata())[0] == {"b": (1, 0)}
    step(worker, LampsSwapMetadata(swap_in=[load("b", 1)]))
    clock.now = 5.5
    # A finished request's load stops (the copy is dropped) and is reported failed at its end.
    assert step(worker, LampsSwapMetadata(), finished={"b"}) == ({}, set(), set())
    clock.now = 6.0
    assert step(worker, LampsSwapMetadata()) == ({}, {"b"}, {"b"})
    assert (worker.num_in_flight, worker.num_stored) == (0, 0)


def test_worker_metadata_aggregates_and_rejects_foreign_metadata() -> None:
    a = LampsSwapWorkerMetadata({"r": (1, 0)})
    b = LampsSwapWorkerMetadata({"r": (0, 1), "s": (1, 0)})
    merged = a.aggregate(b)
    assert isinstance(merged, LampsSwapWorkerMetadata)
    assert merged.swap_out_results == {"r": (1, 1), "s": (1, 0)}
    with pytest.raises(TypeError, match="cannot aggregate"):
        a.aggregate(object())  # type: ignore[arg-type]


def test_a_load_reads_its_source_copy_and_is_reported_as_the_request() -> None:
    # A parked session turn's copy (its own id) is loaded into the session's next request.
    clock = SettableClock()
    worker = make(clock)
    step(worker, LampsSwapMetadata(swap_out=[out("turn-copy", 2)]))
    clock.now = 2.0
    assert step(worker, LampsSwapMetadata())[0] == {"turn-copy": (1, 0)}
    job = SwapInJob("next-request", [5, 6], 0, source_id="turn-copy")
    step(worker, LampsSwapMetadata(swap_in=[job]))
    clock.now = 4.0
    _, finished, failed = step(worker, LampsSwapMetadata())
    assert (finished, failed) == ({"next-request"}, set())
    assert worker.num_stored == 0  # the load consumed the copy
    # A request that finishes while its load runs stops it (reported failed, as its own).
    step(worker, LampsSwapMetadata(swap_out=[out("turn-copy-2", 2)]))
    clock.now = 6.0
    step(worker, LampsSwapMetadata())
    step(worker, LampsSwapMetadata(swap_in=[SwapInJob("r3", [1, 2], 0, source_id="turn-copy-2")]),
         finished={"r3"})  # fmt: skip
    clock.now = 8.0
    assert step(worker, LampsSwapMetadata())[1:] == ({"r3"}, {"r3"})
