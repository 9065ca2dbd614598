"""The KV pause mechanism: what happens to a paused session's KV, done against vLLM.

A pause is a session waiting for its next input (an API call). Its KV can stay on the GPU
(the session keeps its blocks: vLLM's default, *preserve*), be released (*discard*: blocks
freed; at resume the prefix cache gives back what survived and the rest is recomputed) or be
handed to a host copy first (*swap*: the LAMPS swap connector, or vLLM's CPU offloading,
loads it back at resume). `KvPauses` is the one place that releases a session's KV, knows
which sessions are released (their *frontier*: the context computed when the KV went),
restores them at resume, queues them again, and accounts their first admission afterwards.
It also holds *pins*: references on KV blocks that no request owns any more (the finished
turn of a stateless session waiting for its next request, the head of a partly swapped
context), so the prefix cache keeps them until the pin is dropped; the next request that
shares the prefix takes them over through vLLM's own prefix lookup.
A *partial swap* (InferCept's passive swap from a victim's tail) hands the context to the
LAMPS swap connector's host copy but keeps its first blocks on the GPU under a pin; the head
can then be given up block by block from its end (`give_up_head`), as InferCept swaps more of
a victim's tail in later iterations. At resume the prefix lookup finds what is still pinned,
the connector loads the rest, and the pin is dropped at admission. Running requests can be
swapped (or preempted) the same way.
Policies (LAMPS, the baselines) decide what to do with a pause; they do it through here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.request import Request

from lamps.mechanism.capabilities import SwapsPausedKv, pause_swapper, writes_through_to_host
from lamps.mechanism.compat import admitted_req_ids, enqueue_waiting, preempt_running, release_kv

logger = logging.getLogger("vllm.lamps")


@dataclass(frozen=True)
class Admission:
    """A released session's first admission after its pause."""

    request_id: str
    restored_tokens: int  # given back by the prefix cache or a swap-in
    recomputed_tokens: int  # of the released context, computed again


class KvPauses:
    """Releases, restores and accounts paused sessions' KV on one vLLM scheduler."""

    def __init__(self, scheduler: Any) -> None:
        self._sched = scheduler
        self._frontiers: dict[str, int] = {}
        self._pins: dict[str, list[Any]] = {}
        self._num_pinned = 0
        # The connector's capabilities, resolved once (`lamps.mechanism.capabilities`).
        self._swapper = pause_swapper(scheduler.connector)
        self._offloading = writes_through_to_host(scheduler.connector)

    @property
    def can_swap(self) -> bool:
        """Whether a swap path is configured (a full host pool may still refuse a swap)."""
        return self._swapper is not None or self._offloading

    @property
    def swapper(self) -> SwapsPausedKv | None:
        """The connector's swap capability (None: it declares none)."""
        return self._swapper

    def frontier(self, request_id: str) -> int | None:
        """Context computed when the session's KV was released; None while it holds its KV."""
        return self._frontiers.get(request_id)

    @property
    def num_released(self) -> int:
        """Sessions whose KV is released and not yet admitted again."""
        return len(self._frontiers)

    def discard(self, request: Request) -> None:
        """Free a paused session's KV; at resume the prefix cache gives back what survived."""
        self._release(request)

    def swap(self, request: Request, head_blocks: int = 0) -> bool:
        """Hand a paused session's KV to a host copy and free it on the GPU.

        With `head_blocks`, the first `head_blocks` blocks also stay on the GPU under a pin (a
        partial swap; the LAMPS swap connector only): the copy covers the whole context, so
        the head can be given up later. False (and nothing changed) when no swap path takes
        it: none configured, a partial swap without the LAMPS connector, or a full host pool.
        """
        if not self._hand_over(request, head_blocks):
            return False
        self._release(request)
        return True

    def swap_running(self, request: Request, head_blocks: int = 0) -> bool:
        """Swap a running request out (all of it, or all but `head_blocks` pinned blocks) and
        preempt it as vLLM does; it loads its copy when readmitted. False: nothing changed."""
        if not self._hand_over(request, head_blocks):
            return False
        self.preempt_running(request)
        return True

    def preempt_running(self, request: Request) -> None:
        """Preempt a running request as vLLM does (its KV freed; it waits to be readmitted)."""
        held = request.num_computed_tokens
        preempt_running(self._sched, request)
        self._frontiers[request.request_id] = held

    def pinned_head(self, request_id: str) -> int:
        """Blocks of a partially swapped request still pinned on the GPU."""
        return len(self.pinned(_head_key(request_id)))

    def give_up_head(self, request_id: str, blocks: int) -> int:
        """Unpin the last `blocks` blocks of a partially swapped request's head (they are in
        its host copy); returns how many were unpinned."""
        return self.unpin_last(_head_key(request_id), blocks)

    def drop_swap(self, request_id: str) -> bool:
        """Give up a released request's host copy (and a partial swap's pinned head): it
        recomputes at resume what the prefix cache lost. False when it had no droppable copy."""
        if self._swapper is None or not self._swapper.lamps_drop_copy(request_id):
            return False
        self.unpin(_head_key(request_id))
        return True

    def _hand_over(self, request: Request, head_blocks: int) -> bool:
        """Give the request's KV (but a pinned head) to a host copy; False: nothing changed."""
        if head_blocks <= 0:
            if self._swapper is not None:
                # The connector takes its own reference on the blocks until its copy has read
                # them, so they are freed right after as for a discard.
                return bool(self._swapper.lamps_swap_out(request))
            return self._offloading
        if self._swapper is None:
            return False
        head = self.blocks_of(request, head_blocks * self._sched.block_size)
        key = _head_key(request.request_id)
        self.pin(key, head)
        if not self._swapper.lamps_swap_out(request):
            self.unpin(key)
            return False
        return True

    def _release(self, request: Request) -> None:
        sched = self._sched
        # A pause that is starting is in no queue yet; one decided later is set aside in one.
        queued = sched.kv_holding_waiting.discard(request) or sched.waiting.discard(request)
        self._frontiers[request.request_id] = release_kv(sched, request)
        if queued:
            enqueue_waiting(sched, request)

    def resume(self, session: Request) -> None:
        """Queue a session whose next input arrived (it was set aside while paused)."""
        sched = self._sched
        if not sched.kv_holding_waiting.resume(session):
            sched.waiting.resume(session)

    def admitted(self, scheduler_output: SchedulerOutput) -> list[Admission]:
        """Released sessions admitted in this step, before vLLM counts the step's tokens.

        A session may come back as a new request or, once preempted and swapped in, as a
        resumed one; either way its frontier is forgotten here, so a later pause that keeps
        the KV never sees a stale one.
        """
        if not self._frontiers:
            return []
        admitted: list[Admission] = []
        requests = self._sched.requests
        for request_id in admitted_req_ids(scheduler_output):
            frontier = self._frontiers.pop(request_id, None)
            if frontier is None:
                continue
            # A partial swap's head: the request holds its blocks again.
            self.unpin(_head_key(request_id))
            restored = min(requests[request_id].num_computed_tokens, frontier)
            admitted.append(Admission(request_id, restored, frontier - restored))
        return admitted

    def forget(self, request_id: str) -> None:
        """Drop what is known of a freed request."""
        self._frontiers.pop(request_id, None)
        self.unpin(_head_key(request_id))

    # ----- pins -------------------------------------------------------------------------------

    def blocks_of(self, request: Request, num_tokens: int | None = None) -> list[Any]:
        """The request's full, cached KV blocks (of its first `num_tokens` tokens if given)."""
        manager = self._sched.kv_cache_manager
        blocks = manager.get_blocks(request.request_id).blocks[0]
        limit = request.num_computed_tokens if num_tokens is None else num_tokens
        full = min(limit // self._sched.block_size, len(blocks))
        return [b for b in blocks[:full] if b.block_hash is not None]

    def pin(self, key: str, blocks: Sequence[Any]) -> None:
        """Hold a reference on `blocks` under `key`: the prefix cache cannot evict them."""
        if key in self._pins:
            raise ValueError(f"pin {key!r} already holds {len(self._pins[key])} blocks")
        held = list(blocks)
        self._sched.kv_cache_manager.block_pool.touch(held)
        self._pins[key] = held
        self._num_pinned += len(held)

    def unpin(self, key: str) -> int:
        """Drop the pin `key` (its blocks become evictable, last ones first); blocks released."""
        held = self._pins.pop(key, None)
        if not held:
            return 0
        self._sched.kv_cache_manager.block_pool.free_blocks(reversed(held))
        self._num_pinned -= len(held)
        return len(held)

    def unpin_last(self, key: str, count: int) -> int:
        """Drop the last `count` blocks of pin `key` (all of it if fewer); blocks released."""
        held = self._pins.get(key)
        if not held or count <= 0:
            return 0
        if count >= len(held):
            return self.unpin(key)
        released = held[-count:]
        del held[-count:]
        self._sched.kv_cache_manager.block_pool.free_blocks(reversed(released))
        self._num_pinned -= count
        return count

    def pinned(self, key: str) -> Sequence[Any]:
        """The blocks pin `key` holds (empty when none)."""
        return self._pins.get(key, ())

    @property
    def num_pinned_blocks(self) -> int:
        """Blocks held by pins (a block pinned twice counts twice)."""
        return self._num_pinned


def _head_key(request_id: str) -> str:
    """The pin holding a partially swapped request's head."""
    return f"swap-head:{request_id}"
