"""A request's swap record on the scheduler side: the states its copy goes through, what it holds.

`lamps.connector.scheduler_side.SchedulerSide` keeps one `SwapRecord` per request from an
accepted swap-out until its host copy is of no further use; `SwapOutDecision` answers a
swap-out request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_utils import KVCacheBlock


class SwapOutDecision(enum.Enum):
    """Answer to a swap-out request."""

    ACCEPTED = "accepted"  # queued; the caller frees the GPU blocks now
    REJECTED = "rejected"  # host pool full or nothing to save: Discard instead (warning logged)


class SwapState(enum.Enum):
    """Where a request's copy is: queued, being saved, saved on the host, being loaded."""

    QUEUED = "queued"  # waiting for swap budget, not sent to the workers yet
    SAVING = "saving"  # copy sent to the workers
    SAVED = "saved"  # host copy complete, GPU blocks returned
    LOADING = "loading"  # swap-in sent, request in WAITING_FOR_REMOTE_KVS


OUTGOING = (SwapState.QUEUED, SwapState.SAVING)
"""The states of a copy still going to the host (its GPU blocks still held)."""


@dataclass
class SwapRecord:
    """One request's swap: its copy's size and state, the blocks held, the workers' reports."""

    num_tokens: int
    num_blocks: int
    state: SwapState
    held_blocks: list[KVCacheBlock] = field(default_factory=list)
    ok_reports: int = 0
    failed_reports: int = 0
    finished: bool = False  # given up while a copy is in flight: dropped when it stops
    load_blocks: list[int] = field(default_factory=list)  # paced load: device blocks left
    load_next: int = 0  # paced load: next host-copy block to send
    load_sent: bool = False  # paced load: a first part went to the workers
