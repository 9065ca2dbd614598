"""InferCept's passive eviction: swap blocks from victims' tails when memory is short.

InferCept (`WukLab/InferCept` f9b2195, `vllm/core/scheduler_v2.py`) swaps nothing when a call
starts; it evicts only while scheduling, when a request needs more blocks than are free:

- running requests first, FCFS (658-671): a request needing `required` more blocks evicts
  from its victims; if `required` exceeds what is left of the iteration's swap-out allowance
  `t_sout` it is *delayed* (keeps its blocks, does not run this iteration) (532-536, 527-529);
  victims are the preemption targets (the costliest discard candidate, 648-655), else the
  already delayed requests, else the youngest running request not yet scheduled, else the
  request itself, swapped whole (537-553);
- then swapped and waiting requests (677-713), which evict only the preemption targets and
  stop when the allowance is short (`stop_if_no_swap`);
- each eviction swaps `min(GPU blocks, required)` blocks *from the victim's tail*
  (`passive_discard_by_order`, 274-340; `block_manager.swap_out_from_back`, block_manager.py
  388-415), spends that many blocks of the allowance (538-548), and the victim stays a victim
  (and, if paused, Preserve) until it has no GPU block left (256-269, 326-339);
- when the CPU swap space is full it first discards swapped requests, paused ones by longest
  remaining API time first, then swapped running ones (283-306); if still full, it discards
  the victim itself (308-316).

On vLLM V1 a request's KV cannot shrink, so a tail swap is a *partial swap* through the pause
mechanism (`KvPauses.swap(request, head_blocks)`): the whole context goes to the swap
connector's host copy, the head stays on the GPU under a pin, and the request is released (a
running victim is preempted); later evictions give the head up from its end
(`KvPauses.give_up_head`). At readmission the prefix lookup finds what is still pinned and the
connector loads the rest. What differs from InferCept: the host copy is the whole context from
the first eviction (InferCept copies only what it gives up); given-up blocks come back when
the copy ends, one or more steps later (InferCept's copy runs inside the iteration), so the
request that needed them waits for them; vLLM allocates a readmitted request's blocks all at
once (InferCept swaps in chunk by chunk). Without prefix caching a pin cannot hand the head
back, so victims are swapped whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from vllm.v1.request import Request, RequestStatus

from lamps.mechanism.paused_queue import is_paused
from lamps.mechanism.pausing import KvPauses


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Memory:
    """Free blocks, and blocks that come back when in-flight copies end, during one plan."""

    def __init__(self, swap: PassiveSwap) -> None:
        self._swap = swap
        self.promised = 0  # free blocks promised to requests scheduled earlier in the plan
        self.promised_pending = 0  # pending blocks promised to requests that wait for them
        self.refresh()

    def refresh(self) -> None:
        self.free = self._swap.free_blocks() - self.promised
        self.pending = self._swap.pending_free_blocks() - self.promised_pending

    def take(self, need: int) -> bool:
        """Promise `need` blocks: True if free now, False if it waits for copies to end."""
        if need <= self.free:
            self.promised += need
            self.free -= need
            return True
        self.promised_pending += need - self.free
        self.pending -= need - self.free
        self.promised += self.free
        self.free = 0
        return False


class PassiveSwap:
    """Plans one iteration's evictions on block counts and carries them out."""

    def __init__(self, scheduler: Any, pauses: KvPauses, stats: dict[str, int]) -> None:
        self._sched = scheduler
        self._pauses = pauses
        self._stats = stats
        self._partial = bool(scheduler.cache_config.enable_prefix_caching)
        # Requests with a host copy, in the roles InferCept's discard order distinguishes.
        self.swapped_pauses: dict[str, Request] = {}  # paused sessions (scheduler's `paused`)
        self.swapped_queued: dict[str, Request] = {}  # queued requests (its `swapped` list)

    # ----- state --------------------------------------------------------------------------

    def free_blocks(self) -> int:
        return int(self._sched.kv_cache_manager.block_pool.get_num_free_blocks())

    def pending_free_blocks(self) -> int:
        swapper = self._pauses.swapper
        return 0 if swapper is None else int(swapper.lamps_pending_free_blocks())

    def gpu_blocks(self, request: Request) -> int:
        """Blocks on the GPU: its own, or a partially swapped request's pinned head."""
        if self._pauses.frontier(request.request_id) is not None:
            return self._pauses.pinned_head(request.request_id)
        return len(self._sched.kv_cache_manager.get_block_ids(request.request_id)[0])

    def host_free_blocks(self) -> int:
        """Free blocks of the swap connector's host pool (0 without one)."""
        swapper = self._pauses.swapper
        return 0 if swapper is None else int(swapper.num_free_host_blocks)

    def swap_state(self, request_id: str) -> str | None:
        """The swap connector's state of the request's host copy (None: none, or no connector)."""
        swapper = self._pauses.swapper
        return None if swapper is None else swapper.swap_state(request_id)

    def resumed(self, request: Request) -> None:
        """A swapped pause's call returned: it is queued now, still holding its host copy."""
        if self.swapped_pauses.pop(request.request_id, None) is not None:
            self.swapped_queued[request.request_id] = request

    def forget(self, request_id: str) -> None:
        self.swapped_pauses.pop(request_id, None)
        self.swapped_queued.pop(request_id, None)

    def prune(self) -> None:
        """Drop queued entries that were readmitted or lost their copy."""
        for request_id, request in list(self.swapped_queued.items()):
            if request.status == RequestStatus.RUNNING or self.swap_state(request_id) is None:
                del self.swapped_queued[request_id]

    # ----- evictions ----------------------------------------------------------------------

    def _host_room(self, blocks: int, remaining_api: Callable[[str], float]) -> bool:
        """Discard swapped requests until the host pool has `blocks` free (283-306)."""
        if self.host_free_blocks() >= blocks:
            return True
        paused = sorted(self.swapped_pauses, key=remaining_api)
        order = [*self.swapped_queued, *paused]  # popped from the end
        while self.host_free_blocks() < blocks and order:
            request_id = order.pop()
            if self._pauses.drop_swap(request_id):
                self._stats["host_full_discards"] += 1
                self.forget(request_id)
        return self.host_free_blocks() >= blocks

    def swap_whole(self, pause: Request) -> int:
        """Swap a preserved pause out whole if the host pool has room; the blocks it gave up."""
        blocks = self.gpu_blocks(pause)
        if self._pauses.frontier(pause.request_id) is not None:  # partially swapped already
            given = self._pauses.give_up_head(pause.request_id, blocks)
            self._stats["swapped_blocks"] += given
            return given
        if self.host_free_blocks() < blocks or not self._pauses.swap(pause):
            return 0
        self.swapped_pauses[pause.request_id] = pause
        self._stats["paused_swaps"] += 1
        self._stats["swapped_blocks"] += blocks
        return blocks

    def evict(
        self, victim: Request, required: int, remaining_api: Callable[[str], float]
    ) -> tuple[int, bool]:
        """Swap `min(GPU blocks, required)` blocks from a victim's tail; discard it (or preempt
        it by recompute) when the host pool is full. (Blocks swapped, victim has none left.)"""
        request_id = victim.request_id
        paused = is_paused(victim)
        gpu = self.gpu_blocks(victim)
        if self._pauses.frontier(request_id) is not None:  # partially swapped already
            given = self._pauses.give_up_head(request_id, min(gpu, required))
            self._stats["swapped_blocks"] += given
            return given, given == gpu
        n = min(gpu, required) if self._partial else gpu
        if self._host_room(gpu, remaining_api):
            swapped = (
                self._pauses.swap(victim, gpu - n)
                if paused
                else self._pauses.swap_running(victim, gpu - n)
            )
            if swapped:
                (self.swapped_pauses if paused else self.swapped_queued)[request_id] = victim
                self._stats["paused_swaps" if paused else "running_swaps"] += 1
                self._stats["swapped_blocks"] += n
                return n, n == gpu
        if paused:
            self._pauses.discard(victim)
            self._stats["victim_discards"] += 1
        else:
            self._pauses.preempt_running(victim)
            self._stats["running_recomputes"] += 1
        return 0, True

    # ----- the plan -----------------------------------------------------------------------

    def relieve(
        self,
        victims: list[Request],
        out_blocks: int,
        token_budget: int,
        remaining_api: Callable[[str], float],
    ) -> list[Request]:
        """Evict what this iteration's requests need (victims: last first); returns the running
        requests to delay this iteration."""
        memory = _Memory(self)
        targets = sorted(self._sched.running, key=lambda r: r.arrival_time)
        heads = [
            r
            for r in self.swapped_queued.values()
            if r.status != RequestStatus.WAITING_FOR_REMOTE_KVS and self.gpu_blocks(r) > 0
        ]
        delayed: list[Request] = []
        tokens_left = token_budget
        while targets:
            request = targets.pop(0)
            n = min(self._tokens_to_schedule(request), tokens_left)
            if n <= 0:
                continue
            need = self._new_blocks(request, n)
            runs = False
            while True:
                if need <= memory.free + memory.pending:
                    runs = memory.take(need)
                    break
                required = need - memory.free - memory.pending
                if required > out_blocks:
                    break
                group, victim = self._running_victim(victims, delayed, targets, heads)
                if victim is None:
                    self.evict(request, self.gpu_blocks(request), remaining_api)
                    request = None  # swapped itself out
                    break
                swapped, emptied = self.evict(victim, required, remaining_api)
                out_blocks -= swapped
                if emptied or (group is not heads and victim.status != RequestStatus.RUNNING):
                    group.remove(victim)  # gone, or preempted with a pinned head:
                    if not emptied and group is not victims:
                        heads.append(victim)  # it is a partially swapped queued request now
                memory.refresh()
            if runs:
                tokens_left -= n
            elif request is not None:
                delayed.append(request)
        self._admit_waiting(victims, out_blocks, memory, tokens_left, remaining_api)
        delayed = [r for r in delayed if r.status == RequestStatus.RUNNING]
        self._stats["delayed"] += len(delayed)
        return delayed

    @staticmethod
    def _running_victim(
        victims: list[Request],
        delayed: list[Request],
        targets: list[Request],
        heads: list[Request],
    ) -> tuple[list[Request], Request | None]:
        """InferCept's victim order (537-553): preemption targets, delayed requests, then the
        youngest running request not yet scheduled (or a partially swapped one)."""
        if victims:
            return victims, victims[-1]
        if delayed:
            return delayed, delayed[-1]
        young = max(targets, key=lambda r: r.arrival_time, default=None)
        head = max(heads, key=lambda r: r.arrival_time, default=None)
        if head is not None and (young is None or head.arrival_time > young.arrival_time):
            return heads, head
        return targets, young

    def _admit_waiting(
        self,
        victims: list[Request],
        out_blocks: int,
        memory: _Memory,
        tokens_left: int,
        remaining_api: Callable[[str], float],
    ) -> None:
        """Swapped and waiting requests evict only the preemption targets (677-713)."""
        for request in self._queued_heads():
            if tokens_left <= 0:
                return
            n, need = self._admission_need(request, tokens_left)
            while need > memory.free + memory.pending and victims:
                required = need - memory.free - memory.pending
                if required > out_blocks:
                    return
                swapped, emptied = self.evict(victims[-1], required, remaining_api)
                out_blocks -= swapped
                if emptied:
                    victims.pop()
                memory.refresh()
            if need > memory.free:
                return  # vLLM admits nothing it cannot allocate now
            memory.take(need)
            tokens_left -= n

    def _queued_heads(self) -> Iterator[Request]:
        sched = self._sched
        for queue in (sched.kv_holding_waiting, sched.waiting):
            for count, request in enumerate(queue):
                if is_paused(request) or count >= sched.max_num_running_reqs:
                    break
                if request.status != RequestStatus.WAITING_FOR_REMOTE_KVS:
                    yield request

    @staticmethod
    def _tokens_to_schedule(request: Request) -> int:
        tokens: int = (
            request.num_tokens_with_spec
            + request.num_output_placeholders
            - request.num_computed_tokens
        )
        return tokens

    def _new_blocks(self, request: Request, num_new_tokens: int) -> int:
        size = self._sched.block_size
        total = _ceil_div(request.num_computed_tokens + num_new_tokens, size)
        return max(total - self.gpu_blocks(request), 0)

    def _admission_need(self, request: Request, tokens_left: int) -> tuple[int, int]:
        """(tokens it computes, blocks vLLM allocates) if it were admitted now."""
        size = self._sched.block_size
        if request.num_computed_tokens > 0:  # holds its KV (a resumed preserved pause)
            n = min(request.num_tokens - request.num_computed_tokens, tokens_left)
            return n, self._new_blocks(request, n)
        hit = self._sched.kv_cache_manager.get_computed_blocks(request)[1]
        frontier = self._pauses.frontier(request.request_id) or 0
        if self.swap_state(request.request_id) == "saved" and frontier > hit:
            return 0, _ceil_div(frontier, size) - hit // size  # loads, computes next step
        n = min(request.num_tokens - hit, tokens_left)
        return n, _ceil_div(hit + n, size) - hit // size
