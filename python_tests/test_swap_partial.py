"""Partial swaps and paced loads: the mechanism's additions for InferCept's passive swap.

A partial swap (`KvPauses.swap(request, head_blocks)`) copies the context to the LAMPS swap
connector's host pool, keeps its head on the GPU under a pin and releases the request; the head
can be given up from its end later (`give_up_head`). At resume vLLM's prefix lookup finds what
is still pinned and the connector loads the rest, in parts over several steps when loads are
paced (`lamps_pace_loads`). Driven through `SwapHarness`, whose fake model runner checks
that every token's KV survives (the worker role runs on the real CPU swap engine), and through
the simulated worker that the replay uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_swap_connector import BLOCK_SIZE, SwapHarness, paused, start_session
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps.connector import LampsSwapMetadata, SwapInJob, SwapOutJob
from lamps.harness import SettableClock
from lamps.mechanism.compat import SchedulerHooks
from lamps.mechanism.paused_queue import PausedAsidePriorityQueue
from lamps.mechanism.pausing import Admission, KvPauses
from lamps.replay.simulated_swap_worker import SimulatedSwapWorker


class PartialSwapScheduler(SchedulerHooks, Scheduler):
    """Swaps every pause but its first `head_blocks` blocks (a test policy, nothing more)."""

    head_blocks = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = PausedAsidePriorityQueue()
        self.kv_holding_waiting = PausedAsidePriorityQueue()
        self.kv_pauses = KvPauses(self)
        self.admissions: list[Admission] = []

    def on_pause(self, request: Request) -> None:
        assert self.kv_pauses.swap(request, self.head_blocks)

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        self.kv_pauses.resume(session)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        self.admissions += self.kv_pauses.admitted(scheduler_output)

    def on_freed(self, request: Request) -> None:
        self.kv_pauses.forget(request.request_id)


@pytest.fixture
def harness(tiny_llama_dir: Path) -> Any:
    made: list[SwapHarness] = []

    def make(**kwargs: Any) -> SwapHarness:
        kwargs.setdefault("scheduler_cls", PartialSwapScheduler)
        kwargs.setdefault("prefix_caching", True)  # the pinned head comes back by prefix lookup
        made.append(SwapHarness(tiny_llama_dir, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.worker.shutdown()


def evict_cached_blocks(h: SwapHarness) -> None:
    """Run a request that takes every free block, evicting what the prefix cache kept."""
    free = h.scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    start_session(h, "evictor", prompt_len=free * BLOCK_SIZE - 1, max_tokens=1)
    h.step_until(lambda: paused(h, "evictor"))
    h.scheduler.finish_requests("evictor", RequestStatus.FINISHED_ABORTED)
    h.step()


def test_partial_swap_keeps_the_head_pinned_and_loads_the_rest_in_paced_parts(
    harness: Any,
) -> None:
    h = harness(num_blocks=14)
    pool = h.scheduler.kv_cache_manager.block_pool
    free_at_start = pool.get_num_free_blocks()
    start_session(h, "s", prompt_len=70)  # pauses with 73 computed tokens: 5 blocks
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    pauses = h.scheduler.kv_pauses
    assert pauses.pinned_head("s") == 2
    assert h.connector.swapped_tokens("s") == 73  # the whole context, so the head can go later
    free = pool.get_num_free_blocks()
    assert pauses.give_up_head("s", 1) == 1  # a later eviction takes one more block
    assert pauses.pinned_head("s") == 1 and pool.get_num_free_blocks() == free + 1
    evict_cached_blocks(h)
    # Two blocks a step: the 4 blocks past the pinned one load in two parts over two steps.
    h.connector.lamps_pace_loads(2 * BLOCK_SIZE)
    h.metas.clear()
    h.resume("s", [11, 12, 13])
    h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    parts = [job for meta in h.metas for job in meta.swap_in]
    assert [(len(j.block_ids), j.first_block, j.final) for j in parts] == [
        (2, 1, False),
        (2, 3, True),
    ]
    assert sum(1 for meta in h.metas if meta.swap_in) == 2
    assert pauses.num_pinned_blocks == 0  # dropped at admission: the request holds the head
    assert h.scheduler.admissions[-1].restored_tokens == 73
    assert h.scheduler.admissions[-1].recomputed_tokens == 0
    # The harness checked that the next forward saw all 73 old tokens intact.
    h.step_until(lambda: paused(h, "s"))
    h.scheduler.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    h.step_until(lambda: not h.connector.scheduler_side.records and h.host_pool_drained())
    h.step()
    assert pool.get_num_free_blocks() == free_at_start
    assert pauses.num_pinned_blocks == 0


def test_dropped_copy_recomputes_from_what_the_cache_kept(harness: Any) -> None:
    h = harness(num_blocks=14)
    start_session(h, "s", prompt_len=70)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    assert h.scheduler.kv_pauses.drop_swap("s")
    assert not h.scheduler.kv_pauses.drop_swap("s")  # nothing left to drop
    assert h.scheduler.kv_pauses.num_pinned_blocks == 0
    h.step_until(h.host_pool_drained)
    evict_cached_blocks(h)
    h.resume("s", [11, 12, 13])
    h.step_until(lambda: paused(h, "s"))  # the harness checked the recomputed KV
    assert h.scheduler.admissions[-1].recomputed_tokens == 73
    assert h.connector.swap_stats()["swap_ins"] == 0


def test_a_running_request_swapped_with_a_pinned_head_is_readmitted_intact(
    harness: Any,
) -> None:
    h = harness(num_blocks=20)
    start_session(h, "r", prompt_len=60, max_tokens=12)
    h.step_until(lambda: h.scheduler.requests["r"].num_output_tokens >= 3)
    request = h.scheduler.requests["r"]
    held = request.num_computed_tokens
    assert h.scheduler.kv_pauses.swap_running(request, head_blocks=1)
    assert request.status == RequestStatus.PREEMPTED and request.num_preemptions == 1
    assert h.connector.swapped_tokens("r") == held
    assert h.scheduler.kv_pauses.pinned_head("r") == 1
    h.step_until(lambda: h.status("r") == RequestStatus.RUNNING)
    # Readmitted at once: its full blocks were still cached (the tail's until its copy ended),
    # so the prefix cache gave them back; only the partial last block was recomputed, and the
    # host copy was given up.
    admission = h.scheduler.admissions[-1]
    assert admission.restored_tokens == held - held % BLOCK_SIZE
    assert admission.recomputed_tokens == held % BLOCK_SIZE
    h.step_until(lambda: paused(h, "r"))  # the harness checked every token's KV on the way
    assert h.scheduler.requests["r"].num_output_tokens == 12
    assert h.connector.swap_stats()["released"] == 1  # the preemption's copy was given up


# ----- the simulated worker: loads in parts ------------------------------------------------


def stored(worker: SimulatedSwapWorker, clock: SettableClock, request_id: str, blocks: int) -> None:
    worker.start_jobs(LampsSwapMetadata(swap_out=[SwapOutJob(request_id, list(range(blocks)))]))
    clock.now += blocks
    worker.collect_finished(set())
    assert worker.take_worker_metadata() is not None


def part(request_id: str, first: int, n: int, final: bool) -> LampsSwapMetadata:
    return LampsSwapMetadata(swap_in=[SwapInJob(request_id, list(range(n)), first, final)])


def test_a_load_in_parts_is_reported_once_after_its_final_part() -> None:
    clock = SettableClock()
    worker = SimulatedSwapWorker(clock, float)
    stored(worker, clock, "a", 3)
    worker.start_jobs(part("a", 0, 2, False))
    clock.now += 2
    assert not worker.collect_finished(set()).finished_recving  # a part ended: silent
    worker.start_jobs(part("a", 2, 1, True))
    assert worker.num_in_flight == 1
    clock.now += 1
    results = worker.collect_finished(set())
    assert results.finished_recving == {"a"} and not results.failed_recving
    assert worker.num_stored == 0 and worker.num_in_flight == 0


def test_a_load_released_between_parts_is_reported_failed() -> None:
    clock = SettableClock()
    worker = SimulatedSwapWorker(clock, float)
    stored(worker, clock, "a", 3)
    worker.start_jobs(part("a", 0, 1, False))
    clock.now += 1
    assert not worker.collect_finished(set()).finished_recving
    worker.start_jobs(LampsSwapMetadata(release=["a"]))
    results = worker.collect_finished(set())
    assert results.finished_recving == {"a"} and results.failed_recving == {"a"}
    clock.now += 5
    assert not worker.collect_finished(set()).finished_recving  # reported once


def test_a_failed_part_is_reported_once_and_silences_the_rest() -> None:
    clock = SettableClock()
    worker = SimulatedSwapWorker(
        clock, float, fails=lambda job: isinstance(job, SwapInJob) and job.first_block == 0
    )
    stored(worker, clock, "a", 3)
    worker.start_jobs(part("a", 0, 1, False))
    worker.start_jobs(part("a", 1, 2, True))  # queued behind the first on the link
    clock.now += 1
    results = worker.collect_finished(set())
    assert results.finished_recving == {"a"} and results.failed_recving == {"a"}
    clock.now += 2
    assert not worker.collect_finished(set()).finished_recving
    assert worker.num_in_flight == 0
