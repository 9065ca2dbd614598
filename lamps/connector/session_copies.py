"""Host copies of parked session turns, loaded back into the session's next request.

Over vLLM's OpenAI server each turn of a session is a new request: the one that parks a turn
(`lamps.vllm.sessions`) is finished, and the one that takes it over has a new request id. So a
turn's host copy is kept under its own *copy id*, with the block hashes of the parked blocks,
and a later request is matched to it by those hashes (they chain: the request's hash at the
copy's last block equals the copy's last hash exactly when the whole copy is a prefix of the
request). The match is reported to vLLM as an asynchronous load of what the local prefix cache
lacks; the load's job names the copy id as its source (`SwapInJob.source_id`), so the worker
reads the copy and reports the load under the request's id.

The scheduler side's host-pool mirror, block pool, budget and statistics are shared with the
per-request swaps (`scheduler_side.SchedulerSide`); this module only adds the turn records:
QUEUED (blocks held, copy not sent) -> SAVING -> SAVED -> LOADING (into a request) -> gone,
or dropped in any state (a copy in flight is stopped by a release and its record goes when the
workers report it).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamps.connector.messages import (
    LampsSwapMetadata,
    LampsSwapWorkerMetadata,
    SwapInJob,
    SwapOutJob,
)
from lamps.connector.scheduler_side import SchedulerSide

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

COPY_PREFIX = "lamps-turn/"


class _State(enum.Enum):
    QUEUED = "queued"
    SAVING = "saving"
    SAVED = "saved"
    LOADING = "loading"


@dataclass
class _TurnCopy:
    copy_id: str
    key: str
    hashes: list[Any]
    num_blocks: int
    state: _State
    held_blocks: list[Any] = field(default_factory=list)
    reports: int = 0
    failed: int = 0
    dropped: bool = False  # given up while a copy is in flight: removed when it stops
    loading_into: str | None = None


class SessionCopies:
    """Turn copies on the scheduler side of the swap connector."""

    def __init__(self, side: SchedulerSide) -> None:
        self._side = side
        self._ids = itertools.count()
        self._by_key: dict[str, _TurnCopy] = {}
        self._by_id: dict[str, _TurnCopy] = {}
        self._by_last_hash: dict[Any, _TurnCopy] = {}
        self._matched: dict[str, _TurnCopy] = {}  # request id -> copy it may load
        self._queue: list[_TurnCopy] = []
        self.stats = {"turn_swap_outs": 0, "turn_swapped_out_tokens": 0, "turn_loads": 0,
                      "turn_loaded_tokens": 0, "turn_failed": 0}  # fmt: skip

    @property
    def num_copies(self) -> int:
        """Turn copies held (in any state)."""
        return len(self._by_id)

    def park(self, key: str, blocks: list[Any], hashes: list[Any]) -> bool:
        """Queue a copy of a parked turn's full blocks; False when the host pool is full."""
        side = self._side
        if key in self._by_key:
            self.drop(key)
        num_blocks = min(len(blocks), len(hashes))
        if num_blocks == 0 or num_blocks > side.free_host_blocks:
            if num_blocks:
                side.stats["rejected_pool_full"] += 1
            return False
        held = list(blocks[:num_blocks])
        side.block_pool.touch(held)  # the copy reads them after the request has freed them
        side.free_host_blocks -= num_blocks
        copy = _TurnCopy(f"{COPY_PREFIX}{next(self._ids)}", key, list(hashes[:num_blocks]),
                         num_blocks, _State.QUEUED, held)  # fmt: skip
        self._by_key[key] = self._by_id[copy.copy_id] = copy
        self._by_last_hash[copy.hashes[-1]] = copy
        self._queue.append(copy)
        return True

    def drop(self, key: str) -> None:
        """Give up the copy of `key` (no-op when none)."""
        copy = self._by_key.pop(key, None)
        if copy is None:
            return
        self._unindex(copy)
        if copy.state == _State.QUEUED:
            self._queue.remove(copy)
            self._remove(copy)
        elif copy.state == _State.SAVED:
            self._side.pending_release.append(copy.copy_id)
            self._remove(copy)
        else:  # in flight: the release stops it; the report removes the record
            self._side.pending_release.append(copy.copy_id)
            copy.dropped = True

    # ----- vLLM's scheduler-side connector calls, for requests with no swap of their own ----------

    def match(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool] | None:
        """Tokens a turn copy adds to the local hit (as get_num_new_matched_tokens); None: none."""
        hashes = request.block_hashes
        copy = None
        for j in range(min(len(hashes), self._longest()) - 1, -1, -1):
            copy = self._by_last_hash.get(hashes[j])
            if copy is not None and copy.num_blocks == j + 1 and not copy.dropped:
                break
            copy = None
        if copy is None or copy.state == _State.LOADING:
            return None
        block_size = self._side.block_size
        remaining = copy.num_blocks * block_size - num_computed_tokens
        if remaining <= 0:
            return None
        if copy.state != _State.SAVED:
            return None if remaining < block_size else (None, False)  # wait for the copy
        budget = self._side.config.swap_budget_tokens_per_step
        side = self._side
        if budget and side.in_tokens_this_step and side.in_tokens_this_step + remaining > budget:
            return None, False
        self._matched[request.request_id] = copy
        return remaining, True

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> bool:
        """Queue the load of a matched copy into the request's blocks; False: not a match."""
        copy = self._matched.pop(request.request_id, None)
        if copy is None:
            return False
        if num_external_tokens == 0 or copy.state != _State.SAVED or copy.dropped:
            return True
        block_size = self._side.block_size
        first = copy.num_blocks - num_external_tokens // block_size
        block_ids = blocks.get_block_ids()[0][first : copy.num_blocks]
        side = self._side
        side.pending_in.append(SwapInJob(request.request_id, block_ids, first,
                                         source_id=copy.copy_id))  # fmt: skip
        side.in_tokens_this_step += num_external_tokens
        copy.state = _State.LOADING
        copy.loading_into = request.request_id
        self.stats["turn_loads"] += 1
        self.stats["turn_loaded_tokens"] += num_external_tokens
        return True

    def build(self, meta: LampsSwapMetadata) -> None:
        """Add the queued turn copies to the step's swap-outs."""
        for copy in self._queue:
            meta.swap_out.append(SwapOutJob(copy.copy_id, [b.block_id for b in copy.held_blocks]))
            copy.state = _State.SAVING
            self.stats["turn_swap_outs"] += 1
            self.stats["turn_swapped_out_tokens"] += copy.num_blocks * self._side.block_size
        self._queue = []

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        """Apply the workers' reports on turn copies and on loads from them."""
        meta = connector_output.kv_connector_worker_meta
        if isinstance(meta, LampsSwapWorkerMetadata):
            for copy_id, (ok, failed) in meta.swap_out_results.items():
                copy = self._by_id.get(copy_id)
                if copy is not None and copy.state == _State.SAVING:
                    self._on_saved(copy, ok, failed)
        failed_in = connector_output.failed_recving or set()
        for request_id in connector_output.finished_recving or ():
            copy = next((c for c in self._by_id.values() if c.loading_into == request_id), None)
            if copy is None:
                continue
            if request_id in failed_in:
                self.stats["turn_failed"] += 1
                self._side.pending_release.append(copy.copy_id)
            self._by_key.pop(copy.key, None)
            self._unindex(copy)
            self._remove(copy)  # a finished load consumed the host copy

    def request_finished(self, request: Request) -> None:
        """A request finished: a match it never used is forgotten, a load into it stopped."""
        self._matched.pop(request.request_id, None)
        for copy in self._by_id.values():
            if copy.loading_into == request.request_id:
                self._side.pending_release.append(copy.copy_id)

    def has_pending_push_work(self) -> bool:
        """Whether turn copies still wait to be sent or to give their blocks back."""
        return any(c.state in (_State.QUEUED, _State.SAVING) for c in self._by_id.values())

    # ----- internals ---------------------------------------------------------------------------

    def _longest(self) -> int:
        return max((c.num_blocks for c in self._by_id.values()), default=0)

    def _on_saved(self, copy: _TurnCopy, ok: int, failed: int) -> None:
        copy.reports += ok + failed
        copy.failed += failed
        if copy.reports < self._side.world_size:
            return
        self._release_gpu(copy)
        if copy.dropped or copy.failed:
            if copy.failed and not copy.dropped:
                self.stats["turn_failed"] += 1
                self._side.pending_release.append(copy.copy_id)
                self._by_key.pop(copy.key, None)
                self._unindex(copy)
            self._remove(copy)
            return
        copy.state = _State.SAVED

    def _unindex(self, copy: _TurnCopy) -> None:
        if self._by_last_hash.get(copy.hashes[-1]) is copy:
            del self._by_last_hash[copy.hashes[-1]]

    def _release_gpu(self, copy: _TurnCopy) -> None:
        if copy.held_blocks:
            self._side.block_pool.free_blocks(reversed(copy.held_blocks))
            copy.held_blocks = []

    def _remove(self, copy: _TurnCopy) -> None:
        self._release_gpu(copy)
        if self._by_id.pop(copy.copy_id, None) is not None:
            self._side.free_host_blocks += copy.num_blocks
