"""vLLM compatibility: every private vLLM member the plug-in relies on, for vLLM 0.32 to 0.34.

The LAMPS schedulers and the baselines attach to vLLM's `Scheduler` through private hooks; this
is the only module that names them. `SchedulerHooks` overrides them and reports plain events
(a turn ended, a session paused, a session resumed, requests were scheduled, a request is about
to be freed and was freed, an allocation found too few free KV blocks: the scheduler's
`KVCacheManager.allocate_slots` is wrapped on the instance for that one, in the steps where
`may_free_kv_on_shortage` says it might free some); `release_kv` frees a
paused session's KV through vLLM's own preemption path and `enqueue_waiting` queues a request
the way vLLM does; `connector_*` read what vLLM's connector base keeps for its subclasses.
`PRIVATE_MEMBERS` lists everything used (the contract test checks each
against the installed vLLM). Importing this module checks the
vLLM version and fails with a readable message outside the tested range.

Where 0.32 and 0.33 differ:
- 0.32 queues a session whose turn ended inside `_handle_stopped_request`, before
  `update_from_output` removes the requests that stopped while preempted from the waiting
  queues (which then loses such a session); 0.33 queues the continuing sessions after those
  removals. Here a session that stopped while preempted is queued after the removals on both.
- At resume 0.32 keeps the computed part of the finished turn's output, 0.33 keeps all of it
  but the last sampled token. A session holding no KV (LAMPS released it, or vLLM preempted
  it) has nothing computed, and 0.32 would then cut its whole sequence; here 0.32 keeps what
  0.33 keeps.

Where 0.34 differs (line numbers of vLLM 0.34.0's `v1/core/sched/scheduler.py`):
- A resumed preempted request is sent to the workers as a new one (:1619-1626) and
  `CachedRequestData` lost `resumed_req_ids` and `all_token_ids`; `admitted_req_ids` gives the
  requests a step (re)started on every version.
- `ModelRunnerOutput` lost `req_id_to_index` (v1/outputs.py:267; the scheduler indexes
  `req_ids`, :2355-2358); `runner_output_ids` gives the identifying fields on every version.
- Cache-aware admission (`--cache-aware-admission-window`, :428-438, :1066-1068, :2790-2828)
  moves waiting requests with a cached prefix to the front of `waiting` by position; vLLM
  turns it off unless the queue is its FCFS deque. The plug-in's schedulers order `waiting`
  themselves, so `SchedulerHooks` turns it off as well (see `_compat_turn_off_cache_aware`).
- The block reservation of an async KV load is cached (`Scheduler._parked_reservations`) from
  the load's start (:1604) to the request's admission (:1662) or free (:3178); the
  `_preempt_request` (:1853-1897) that `release_kv` and `preempt_running` use does not drop
  it. They take only paused sessions and running requests, admitted since their last load,
  which hold none (python_tests/test_vllm034.py checks it after swap-ins).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import vllm
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps.mechanism.versions import check_version

if TYPE_CHECKING:
    from vllm.config import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.core.sched.request_queue import SchedulingPolicy
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.outputs import ModelRunnerOutput

logger = logging.getLogger("vllm.lamps")

VLLM_VERSION = check_version(vllm.__version__)
# 0.32 queues a continuing session inside _handle_stopped_request (see the module docstring).
_QUEUES_IN_HANDLE_STOPPED = VLLM_VERSION[:2] == (0, 32)
# 0.32 keeps only the computed part of a finished turn's output at resume.
_KEEPS_COMPUTED_OUTPUT = VLLM_VERSION[:2] == (0, 32)
# Up to 0.33 a resumed preempted request may be listed in CachedRequestData.resumed_req_ids
# (vLLM's V1 model runner) and ModelRunnerOutput carries req_id_to_index; 0.34 has neither.
_HAS_RESUMED_REQ_IDS = VLLM_VERSION[:2] <= (0, 33)
_HAS_REQ_ID_TO_INDEX = VLLM_VERSION[:2] <= (0, 33)
# 0.34 added cache-aware admission (--cache-aware-admission-window).
_HAS_CACHE_AWARE_ADMISSION = VLLM_VERSION[:2] >= (0, 34)


@dataclass(frozen=True)
class PrivateMember:
    """One private vLLM member the plug-in relies on."""

    owner: type
    name: str
    use: str  # "override", "call", "read" or "write"
    parameters: tuple[str, ...] | None = None  # a method's parameter names, self excluded
    since: tuple[int, int] = (0, 32)  # the first vLLM minor version that has it


_ALL_PRIVATE_MEMBERS: tuple[PrivateMember, ...] = (
    PrivateMember(Scheduler, "_handle_stopped_request", "override", ("request",)),
    PrivateMember(Scheduler, "_enqueue_waiting_request", "override", ("request",)),
    PrivateMember(Scheduler, "_update_request_as_session", "override", ("session", "update")),
    PrivateMember(Scheduler, "_update_after_schedule", "override", ("scheduler_output",)),
    PrivateMember(Scheduler, "_free_request", "override", ("request", "delay_free_blocks")),
    PrivateMember(
        Scheduler, "_preempt_request", "call", ("request", "timestamp", "drop_stale_output")
    ),
    PrivateMember(Scheduler, "waiting", "write"),
    PrivateMember(Scheduler, "kv_holding_waiting", "write"),
    PrivateMember(Scheduler, "running", "write"),
    PrivateMember(Scheduler, "max_num_scheduled_tokens", "write"),
    PrivateMember(Scheduler, "requests", "read"),
    PrivateMember(Scheduler, "policy", "write"),
    PrivateMember(Scheduler, "log_stats", "write"),
    PrivateMember(Scheduler, "kv_cache_manager", "read"),
    PrivateMember(Scheduler, "connector", "read"),
    PrivateMember(Scheduler, "block_size", "read"),
    PrivateMember(Scheduler, "max_num_scheduled_tokens", "read"),
    PrivateMember(Scheduler, "kv_cache_config", "read"),
    PrivateMember(Scheduler, "cache_config", "read"),
    PrivateMember(Scheduler, "vllm_config", "read"),
    PrivateMember(Scheduler, "num_waiting_for_streaming_input", "read"),
    PrivateMember(Scheduler, "pause_state", "read"),
    PrivateMember(Request, "num_preemptions", "write"),
    PrivateMember(Request, "status", "write"),
    PrivateMember(Scheduler, "cache_aware_window", "write", since=(0, 34)),
    # What vLLM's connector base keeps for its subclasses (the LAMPS swap connector reads them).
    PrivateMember(KVConnectorBase_V1, "_kv_transfer_config", "write"),
    PrivateMember(KVConnectorBase_V1, "_kv_cache_config", "read"),
    PrivateMember(KVConnectorBase_V1, "_get_connector_metadata", "call", ()),
)
PRIVATE_MEMBERS: tuple[PrivateMember, ...] = tuple(
    m for m in _ALL_PRIVATE_MEMBERS if m.since <= VLLM_VERSION[:2]
)
"""The private members the plug-in uses on the installed vLLM version."""


def connector_transfer_config(connector: KVConnectorBase_V1) -> KVTransferConfig:
    """The `KVTransferConfig` a connector was built with (the settings its subclass reads)."""
    config: KVTransferConfig = connector._kv_transfer_config
    return config


def connector_num_gpu_blocks(connector: KVConnectorBase_V1) -> int:
    """GPU KV blocks of the cache the connector was built for."""
    return int(connector._kv_cache_config.num_blocks)


def connector_step_metadata(connector: KVConnectorBase_V1) -> KVConnectorMetadata:
    """The metadata the scheduler sent the worker side for the current step."""
    return connector._get_connector_metadata()


class _RequeueSink:
    """Stands in for `waiting` while vLLM's preemption path runs: swallows its re-queue."""

    def prepend_request(self, request: Request) -> None:
        """Drop the re-queue: the caller queues the released session itself."""


_REQUEUE_SINK = _RequeueSink()


def release_kv(scheduler: Scheduler, request: Request) -> int:
    """Free a paused session's KV through vLLM's preemption path; returns the tokens it held.

    `_preempt_request` frees everything a request holds besides its queue slot (blocks,
    deferred frees under async KV connectors, encoder cache, in-flight prefill tracking) and
    tells the workers to forget the request's state. It asserts a running request, re-queues
    it and counts a preemption; the session goes through it as running, with the re-queue
    swallowed and neither the status nor the preemption counters (nor vLLM's preemption
    metric) changed. The caller must have taken the request out of its queue.
    """
    held: int = request.num_computed_tokens
    status, preemptions = request.status, request.num_preemptions
    waiting, log_stats = scheduler.waiting, scheduler.log_stats
    request.status = RequestStatus.RUNNING
    scheduler.waiting = _REQUEUE_SINK
    scheduler.log_stats = False
    try:
        scheduler._preempt_request(request, time.monotonic())
    finally:
        scheduler.waiting = waiting
        scheduler.log_stats = log_stats
        request.status = status
        request.num_preemptions = preemptions
    return held


def preempt_running(scheduler: Scheduler, request: Request) -> None:
    """Preempt a running request outside `schedule()` exactly as vLLM does inside it: taken off
    the running list, its KV freed, re-queued as PREEMPTED (counted as a preemption)."""
    scheduler.running.remove(request)
    scheduler._preempt_request(request, time.monotonic())


def admitted_req_ids(scheduler_output: SchedulerOutput) -> list[str]:
    """The requests a step (re)started from a waiting queue: new ones and resumed preempted ones.

    vLLM 0.34 sends every one of them as a new request; up to 0.33 the V1 model runner got a
    resumed one in `scheduled_cached_reqs.resumed_req_ids`.
    """
    admitted = [r.req_id for r in scheduler_output.scheduled_new_reqs]
    if _HAS_RESUMED_REQ_IDS:
        admitted += scheduler_output.scheduled_cached_reqs.resumed_req_ids
    return admitted


def runner_output_ids(req_ids: list[str]) -> dict[str, Any]:
    """The fields of a `ModelRunnerOutput` that identify its requests, for this vLLM version."""
    if _HAS_REQ_ID_TO_INDEX:
        return {"req_ids": req_ids, "req_id_to_index": {r: i for i, r in enumerate(req_ids)}}
    return {"req_ids": req_ids}


def enqueue_waiting(scheduler: Scheduler, request: Request) -> None:
    """Queue a waiting request as vLLM does (KV holders first), bypassing the hooks below."""
    Scheduler._enqueue_waiting_request(scheduler, request)


class SchedulerHooks:
    """Mixin over vLLM's `Scheduler`: its private hooks in, plain events out.

    Put it before the vLLM class: `class X(SchedulerHooks, AsyncScheduler)`. Subclasses
    override the `on_*` events; every event runs inside vLLM's own
    bookkeeping, so it may read the scheduler but should change queues only through the
    functions of this module.
    """

    if TYPE_CHECKING:
        # vLLM's Scheduler attributes the mixins read (vLLM's names are Any to mypy here).
        waiting: Any
        kv_holding_waiting: Any
        running: list[Request]
        requests: dict[str, Request]
        pause_state: PauseState
        policy: SchedulingPolicy
        vllm_config: Any
        cache_config: Any
        kv_cache_config: Any
        kv_cache_manager: Any
        connector: Any
        block_size: int
        num_waiting_for_streaming_input: int
        cache_aware_window: int  # vLLM 0.34 and later

        def has_unfinished_requests(self) -> bool: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compat_stopping: Request | None = None
        self._compat_continuing: list[Request] = []
        self._compat_build_watched_allocate()
        self._compat_turn_off_cache_aware()

    def _compat_turn_off_cache_aware(self) -> None:
        # vLLM 0.34's cache-aware admission takes the first N requests of `waiting` by
        # iteration, removes them and prepends them again in a new order: it needs a queue with
        # positions, and vLLM turns it off for its priority queue. These schedulers' queues are
        # ranked or re-sorted by their own policy: the reorder would undo it (a re-sorted deque)
        # or re-insert every request of the window each step (a ranked queue: its wait, which
        # starvation prevention counts, would restart).
        if _HAS_CACHE_AWARE_ADMISSION and self.cache_aware_window:
            logger.warning(
                "%s orders its waiting queue by its own policy; ignoring "
                "--cache-aware-admission-window=%d",
                type(self).__name__,
                self.cache_aware_window,
            )
            self.cache_aware_window = 0

    def _compat_build_watched_allocate(self) -> None:
        # vLLM's schedule() preempts running requests (and stops admitting waiting ones) when
        # KVCacheManager.allocate_slots answers None; give the subclass a chance to free
        # blocks first, then ask again. The wrapper goes on the instance only for the steps
        # where the subclass may free some: a step makes one call per running request, and a
        # Python wrapper around each costs about 1% of a 256-request step (docs/performance.md).
        allocate = self.kv_cache_manager.allocate_slots

        def allocate_slots(*args: Any, **kwargs: Any) -> Any:
            blocks = allocate(*args, **kwargs)
            while blocks is None and self.on_kv_shortage():
                blocks = allocate(*args, **kwargs)
            return blocks

        self._compat_watched_allocate = allocate_slots

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if not self.may_free_kv_on_shortage():
            return super().schedule(*args, **kwargs)  # type: ignore[misc]
        manager = self.kv_cache_manager
        own = vars(manager).get("allocate_slots")
        manager.allocate_slots = self._compat_watched_allocate
        try:
            return super().schedule(*args, **kwargs)  # type: ignore[misc]
        finally:
            if own is None:
                del manager.allocate_slots
            else:
                manager.allocate_slots = own

    # ----- events ---------------------------------------------------------------------------

    def on_turn_end(self, request: Request) -> None:
        """A request's turn ended: it finishes or, a session, pauses (vLLM has not handled it)."""

    def on_pause(self, request: Request) -> None:
        """A session starts waiting for its next input; it holds its KV and is in no queue."""

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        """A session's next input was applied; it is WAITING, in the queue it was set aside in."""

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        """A step was scheduled; `num_computed_tokens` do not count its tokens yet."""

    def on_finishing(self, request: Request) -> None:
        """A finished request is about to be freed: it still holds its KV blocks."""

    def on_freed(self, request: Request) -> None:
        """vLLM freed a finished request (it may still sit in a waiting queue)."""

    def may_free_kv_on_shortage(self) -> bool:
        """Whether `on_kv_shortage` might free blocks during the step about to be scheduled.

        Asked once before each step; when False, the step's allocations are not watched. It
        must never be False when `on_kv_shortage` would free something in that step.
        """
        return False

    def on_kv_shortage(self) -> bool:
        """An allocation found too few free KV blocks, before vLLM preempts or stops admitting.

        Return True after freeing some blocks (the allocation is tried again), False when
        nothing more can be freed (vLLM then goes on as it would).
        """
        return False

    # ----- vLLM's hooks ---------------------------------------------------------------------

    def _handle_stopped_request(self, request: Request) -> bool:
        self.on_turn_end(request)
        if _QUEUES_IN_HANDLE_STOPPED and request.status == RequestStatus.PREEMPTED:
            # Stopped by a token that was in flight when it was preempted (async scheduling):
            # vLLM 0.32 would queue it now and remove it from the queue right after.
            self._compat_stopping = request
        try:
            return super()._handle_stopped_request(request)  # type: ignore[misc, no-any-return]
        finally:
            self._compat_stopping = None

    def _enqueue_waiting_request(self, request: Request) -> None:
        if request is self._compat_stopping:
            # Queued after update_from_output's removals instead, as vLLM 0.33 does.
            self._compat_continuing.append(request)
            return
        self._enqueue_continuing(request)

    def _enqueue_continuing(self, request: Request) -> None:
        if request.status == RequestStatus.WAITING_FOR_STREAMING_REQ:
            self.on_pause(request)
        enqueue_waiting(self, request)

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> dict[int, EngineCoreOutputs]:
        outputs = super().update_from_output(  # type: ignore[misc]
            scheduler_output, model_runner_output
        )
        continuing, self._compat_continuing = self._compat_continuing, []
        for request in continuing:
            if not request.is_finished():
                self._enqueue_continuing(request)
        return outputs  # type: ignore[no-any-return]

    def _update_request_as_session(self, session: Request, update: StreamingUpdate) -> None:
        if _KEEPS_COMPUTED_OUTPUT and session.num_computed_tokens == 0:
            # vLLM 0.32 keeps the turn's output up to num_computed_tokens; with no KV that
            # would cut the whole sequence. Keep all but the last sampled token, as 0.33 does,
            # then reset it: nothing is on the GPU.
            session.num_computed_tokens = session.num_tokens - 1
            super()._update_request_as_session(session, update)  # type: ignore[misc]
            session.num_computed_tokens = 0
        else:
            super()._update_request_as_session(session, update)  # type: ignore[misc]
        self.on_resume(session, update)

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        self.on_scheduled(scheduler_output)
        super()._update_after_schedule(scheduler_output)  # type: ignore[misc]

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        self.on_finishing(request)
        result = super()._free_request(request, *args, **kwargs)  # type: ignore[misc]
        self.on_freed(request)
        return result

    def get_num_unfinished_requests(self) -> int:
        if self.pause_state == PauseState.PAUSED_NEW:
            # vLLM drains only the KV-holding queue here and subtracts every session waiting
            # for input, assuming all of them sit in it; a session whose KV was released is
            # set aside in `waiting` instead.
            held: int = len(self.kv_holding_waiting) - self.kv_holding_waiting.num_paused
            return len(self.running) + held
        return super().get_num_unfinished_requests()  # type: ignore[misc, no-any-return]
