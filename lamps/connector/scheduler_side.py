"""The scheduler side's state machine: host-pool mirror, swap budget, request records, reports.

A record lives from an accepted swap-out until its host copy is of no further use, and is
removed on every path: loaded back, resumed from the device, failed copy, request finished or
aborted in any state (an in-flight copy's record goes when the workers report it stopped).

For InferCept's passive swap (`lamps.baselines`), loads may be *paced* (`pace_loads`): each
step sends at most that many tokens of loads, so one request's load is split into several jobs
over several steps (the last one `final`); and a host copy may be given up (`drop_copy`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from lamps.connector.config import SwapConfig
from lamps.connector.messages import (
    LampsSwapMetadata,
    LampsSwapWorkerMetadata,
    SwapInJob,
    SwapOutJob,
)
from lamps.connector.records import OUTGOING, SwapOutDecision, SwapRecord, SwapState

if TYPE_CHECKING:
    from vllm.v1.core.block_pool import BlockPool
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks, KVCacheManager
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = logging.getLogger("vllm.lamps.swap")

STAT_KEYS = (
    "swap_outs",  # swap-outs sent to the workers
    "swapped_out_tokens",
    "saved_out",  # swap-outs whose host copy completed
    "failed_out",
    "swap_ins",  # swap-ins sent to the workers
    "swapped_in_tokens",
    "loaded_in",  # swap-ins that completed
    "failed_in",
    "rejected_pool_full",
    "released",  # host copies or queued swap-outs given up (request resumed or finished)
)


class SchedulerSide:
    """Bookkeeping in the scheduler process: host pool mirror, swap budget, request states."""

    def __init__(
        self, config: SwapConfig, block_size: int, num_host_blocks: int, world_size: int
    ) -> None:
        self.config = config
        self.block_size = block_size
        self.num_host_blocks = num_host_blocks
        self.free_host_blocks = num_host_blocks
        self.world_size = world_size
        self.records: dict[str, SwapRecord] = {}
        self.queue: deque[str] = deque()
        self.pending_release: list[str] = []
        self.pending_in: list[SwapInJob] = []
        self.in_tokens_this_step = 0
        self.pace_in_tokens: int | None = None  # None: whole loads, else tokens per step
        self.loading: deque[str] = deque()  # paced loads with parts still to send
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._manager: KVCacheManager | None = None

    def bind(self, manager: KVCacheManager) -> None:
        """Use the scheduler's KV cache manager (its block pool holds the copies' blocks)."""
        self._manager = manager

    @property
    def manager(self) -> KVCacheManager:
        """The bound KV cache manager; RuntimeError before `bind`."""
        if self._manager is None:
            raise RuntimeError("LampsSwapConnector: no KV cache manager bound")
        return self._manager

    @property
    def block_pool(self) -> BlockPool:
        """The bound manager's block pool."""
        return self.manager.block_pool

    # ----- the LAMPS scheduler's seam ----------------------------------------------------------

    def request_swap_out(self, request: Request) -> SwapOutDecision:
        """Queue a swap-out of the request's computed KV, holding its blocks until copied."""
        request_id = request.request_id
        existing = self.records.get(request_id)
        if existing is not None:
            if existing.finished:
                # The copy of an earlier pause is still being stopped; its host blocks are
                # not back yet.
                return SwapOutDecision.REJECTED
            raise ValueError(
                f"request_id: {request_id!r} already has a swap in state {existing.state.value}"
            )
        if request.is_finished():
            raise ValueError(f"request_id: {request_id!r} is finished; nothing to swap out")
        num_tokens = request.num_computed_tokens
        if num_tokens <= 0:
            return SwapOutDecision.REJECTED
        manager = self.manager
        num_blocks = math.ceil(num_tokens / self.block_size)
        blocks = manager.get_blocks(request_id).blocks[0]
        if len(blocks) < num_blocks:
            raise ValueError(
                f"request_id: {request_id!r} holds {len(blocks)} blocks but has {num_tokens} "
                f"computed tokens ({num_blocks} blocks)"
            )
        blocks = list(blocks[:num_blocks])
        if num_blocks > self.free_host_blocks:
            self.stats["rejected_pool_full"] += 1
            logger.warning(
                "LAMPS swap: host pool full (%d of %d blocks free, request %s needs %d); "
                "falling back to Discard",
                self.free_host_blocks,
                self.num_host_blocks,
                request_id,
                num_blocks,
            )
            return SwapOutDecision.REJECTED
        manager.block_pool.touch(blocks)
        self.free_host_blocks -= num_blocks
        self.records[request_id] = SwapRecord(num_tokens, num_blocks, SwapState.QUEUED, blocks)
        self.queue.append(request_id)
        return SwapOutDecision.ACCEPTED

    def drop_copy(self, request_id: str) -> bool:
        """Give up a host copy (queued, being made or made) so the request recomputes instead.

        False when there is none, or when it is being loaded (vLLM waits for that load).
        """
        record = self.records.get(request_id)
        if record is None or record.finished or record.state == SwapState.LOADING:
            return False
        self._release(request_id, record)
        return True

    def pending_free_blocks(self) -> int:
        """GPU blocks only the connector still holds: they return to the pool when their
        copies have read them."""
        return sum(
            1
            for record in self.records.values()
            if record.state in OUTGOING
            for block in record.held_blocks
            if block.ref_cnt == 1
        )

    def backlog_tokens(self) -> tuple[int, int]:
        """Tokens of the copies not yet ended, (out: queued or saving, in: loading)."""
        out = sum(r.num_tokens for r in self.records.values() if r.state in OUTGOING)
        loads = sum(r.num_tokens for r in self.records.values() if r.state == SwapState.LOADING)
        return out, loads

    def pace_loads(self, tokens_per_step: int | None) -> None:
        """Send at most `tokens_per_step` tokens of loads per step from now on (None: whole
        loads, as by default). A load larger than that is split over several steps; a new load
        always sends at least one block in its first step, so the workers know of it."""
        if tokens_per_step is not None and tokens_per_step < 0:
            raise ValueError(f"tokens_per_step: must be >= 0 or None (got {tokens_per_step})")
        self.pace_in_tokens = tokens_per_step

    def swap_state(self, request_id: str) -> str | None:
        """ "queued", "saving", "saved", "loading", or None."""
        record = self.records.get(request_id)
        return None if record is None else record.state.value

    def swapped_tokens(self, request_id: str) -> int:
        """Tokens of the request's host copy (0 when none)."""
        record = self.records.get(request_id)
        return 0 if record is None else record.num_tokens

    # ----- vLLM's scheduler-side connector calls -----------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Tokens to load beyond the local hit (None: wait for the copy), and whether async."""
        record = self.records.get(request.request_id)
        if record is None or record.finished or record.state == SwapState.LOADING:
            return 0, False
        remaining = record.num_tokens - num_computed_tokens
        if record.state != SwapState.SAVED:
            # The copy is still being made. What the local prefix cache does not cover is a
            # partial block at most: recompute it; otherwise wait for the copy.
            return (0, False) if remaining < self.block_size else (None, False)
        if remaining <= 0:
            return 0, False
        budget = self.config.swap_budget_tokens_per_step
        if (
            self.pace_in_tokens is None
            and budget
            and self.in_tokens_this_step
            and self.in_tokens_this_step + remaining > budget
        ):
            return None, False
        return remaining, True

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """Queue the load into the allocated blocks, or give up a copy the device made useless."""
        record = self.records.get(request.request_id)
        if record is None or record.finished:
            return
        if num_external_tokens == 0:
            if record.state != SwapState.LOADING:
                # Resumed from the device: the local prefix cache had it all, or the copy was
                # still in flight. The host copy is of no further use.
                self._release(request.request_id, record)
            return
        if record.state != SwapState.SAVED:
            raise RuntimeError(
                f"request_id: {request.request_id!r} allocated for a load in state "
                f"{record.state.value}"
            )
        local_tokens = record.num_tokens - num_external_tokens
        # vLLM hands the connector a block-aligned local hit, so the load starts on a block.
        if local_tokens % self.block_size:
            raise RuntimeError(
                f"request_id: {request.request_id!r} local hit of {local_tokens} tokens is not "
                f"a multiple of the block size {self.block_size}"
            )
        first_block = local_tokens // self.block_size
        block_ids = blocks.get_block_ids()[0][first_block : record.num_blocks]
        if self.pace_in_tokens is None:
            self.pending_in.append(SwapInJob(request.request_id, block_ids, first_block))
        else:
            record.load_blocks, record.load_next = list(block_ids), first_block
            self.loading.append(request.request_id)
        self.in_tokens_this_step += num_external_tokens
        self.stats["swap_ins"] += 1
        self.stats["swapped_in_tokens"] += num_external_tokens
        record.state = SwapState.LOADING

    def build_connector_meta(self) -> LampsSwapMetadata:
        """The step's jobs: pending releases and loads, and queued swap-outs within the budget."""
        meta = LampsSwapMetadata(release=self.pending_release, swap_in=self.pending_in)
        self.pending_release, self.pending_in = [], []
        self.in_tokens_this_step = 0
        budget = self.config.swap_budget_tokens_per_step
        sent = 0
        while self.queue:
            record = self.records[self.queue[0]]
            if budget and sent and sent + record.num_tokens > budget:
                break
            request_id = self.queue.popleft()
            meta.swap_out.append(SwapOutJob(request_id, [b.block_id for b in record.held_blocks]))
            record.state = SwapState.SAVING
            sent += record.num_tokens
            self.stats["swap_outs"] += 1
            self.stats["swapped_out_tokens"] += record.num_tokens
        if self.loading:
            self._send_paced_loads(meta)
        return meta

    def _send_paced_loads(self, meta: LampsSwapMetadata) -> None:
        """This step's parts of the paced loads, oldest load first, within the pace."""
        left = (self.pace_in_tokens or 0) // self.block_size
        for request_id in list(self.loading):
            record = self.records[request_id]
            take = min(len(record.load_blocks), left)
            if take == 0 and record.load_sent:
                continue
            take = max(take, 1)
            left = max(left - take, 0)
            block_ids, record.load_blocks = record.load_blocks[:take], record.load_blocks[take:]
            final = not record.load_blocks
            meta.swap_in.append(SwapInJob(request_id, block_ids, record.load_next, final))
            record.load_next += take
            record.load_sent = True
            if final:
                self.loading.remove(request_id)

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        """Apply the workers' reports: swap-outs that ended, loads that ended."""
        meta = connector_output.kv_connector_worker_meta
        if isinstance(meta, LampsSwapWorkerMetadata):
            for request_id, (ok, failed) in meta.swap_out_results.items():
                self._on_swap_out_report(request_id, ok, failed)
        failed_in = connector_output.failed_recving or set()
        for request_id in connector_output.finished_recving or ():
            record = self.records.get(request_id)
            if record is None or record.state != SwapState.LOADING:
                continue
            if not record.finished:
                if request_id in failed_in:
                    self.stats["failed_in"] += 1
                    logger.warning(
                        "LAMPS swap: swap-in of request %s failed; it recomputes instead",
                        request_id,
                    )
                    # A failed load leaves the worker's host copy in place: drop it there too.
                    self.pending_release.append(request_id)
                else:
                    self.stats["loaded_in"] += 1
            self._drop(request_id)

    def request_finished(self, request: Request) -> None:
        """Give up the request's swap; a copy in flight is stopped and its record dropped later."""
        record = self.records.get(request.request_id)
        if record is None:
            return
        if record.state == SwapState.LOADING:
            # vLLM keeps the blocks until the worker reports the (aborted) load finished; a
            # paced load sends no more parts (its first part went out, so the workers report).
            record.finished = True
            self.pending_release.append(request.request_id)
            self._stop_paced_load(request.request_id)
            return
        self._release(request.request_id, record)

    def has_pending_push_work(self) -> bool:
        """Whether queued copies still wait to be sent or to give their blocks back."""
        return any(r.state in (SwapState.QUEUED, SwapState.SAVING) for r in self.records.values())

    # ----- internals ---------------------------------------------------------------------------

    def _release(self, request_id: str, record: SwapRecord) -> None:
        self.stats["released"] += 1
        if record.state == SwapState.QUEUED:
            self.queue.remove(request_id)
            self._drop(request_id)
        elif record.state == SwapState.SAVED:
            self.pending_release.append(request_id)
            self._drop(request_id)
        else:
            # In flight: the workers stop it and report; the host blocks and the GPU blocks we
            # hold come back with that report.
            self.pending_release.append(request_id)
            record.finished = True

    def _drop(self, request_id: str) -> None:
        record = self.records.pop(request_id)
        self.free_host_blocks += record.num_blocks
        self._release_gpu_blocks(record)
        self._stop_paced_load(request_id)

    def _stop_paced_load(self, request_id: str) -> None:
        if request_id in self.loading:
            self.loading.remove(request_id)

    def _release_gpu_blocks(self, record: SwapRecord) -> None:
        if record.held_blocks:
            self.block_pool.free_blocks(reversed(record.held_blocks))
            record.held_blocks = []

    def _on_swap_out_report(self, request_id: str, ok: int, failed: int) -> None:
        record = self.records.get(request_id)
        if record is None or record.state != SwapState.SAVING:
            return
        record.ok_reports += ok
        record.failed_reports += failed
        if record.ok_reports + record.failed_reports < self.world_size:
            return
        # The copy has read the GPU blocks (or stopped): hand them back to the pool.
        self._release_gpu_blocks(record)
        if record.finished:
            self._drop(request_id)
            return
        if record.failed_reports:
            self.stats["failed_out"] += 1
            logger.warning(
                "LAMPS swap: swap-out of request %s failed; it recomputes at resume (Discard)",
                request_id,
            )
            self.pending_release.append(request_id)
            self._drop(request_id)
            return
        self.stats["saved_out"] += 1
        record.state = SwapState.SAVED
