"""Continuum (arXiv 2511.02230) as a vLLM V1 scheduler: TTL pins for tool calls, program FCFS.

Source: `Hanchenli/vllm-continuum`, read through the fork `Whrlicht/vllm-continuum` (22746a2)
which carries its code unchanged in these parts: `vllm/v1/core/sched/scheduler.py` and
`request_queue.py` (`ContinuumRequestQueue`), `vllm/v1/core/estimate_with_func.py`.

- When a turn ends in a tool call, its KV is pinned for a TTL (the fork's block-freeing hook:
  not for a program's last step, `is_last_step`; a TTL of 0.01 s or less pins nothing), chosen
  from the tool's observed durations by `continuum_ttl` (the paper's cost-benefit rule, or the
  public code's fixed 2-second rule). A program's earlier pin is dropped first.
- At each step, pins whose TTL ran out are dropped, unless the program has a turn waiting
  (`unpin_requests_regular`, at the start of `schedule`).
- Program-level FCFS (`add_request` records a job's first arrival; `ContinuumRequestQueue.
  peek_request`): waiting requests of pinned programs first, then by their program's first
  arrival; the running list in the same order, so that vLLM's victim (`running[-1]`) is the
  latest program's request (`pop_running_request_based_on_last_step`).
- Under memory pressure pins are kept while other requests can be preempted: only with at most
  one request running is the pin that would last longest given up (same function; and in the
  waiting phase when nothing runs).
- Tool durations are learned online: a program's next arrival minus its last departure, per
  tool (`update_func_call_exec_time`); the tool is the client's (`lamps` hint `tool`), where
  Continuum parses it from the output.

Two modes, one policy. Stateless API (each turn a new request; the program is vLLM's
`Request.session_id`, or the `program` field of the `lamps` hints): the finished turn's
blocks are pinned in the prefix cache (`program_pins.ProgramPins`). Streaming sessions (a
turn pauses the session): the session keeps its KV (Preserve) until the TTL, then it is
discarded (`KvPauses.discard`). What differs from the code: the pin ends when the program's
next turn is admitted; a preempted running request is preferred regardless of `is_last_step`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, StreamingUpdate

from lamps import CostModel
from lamps.baselines.continuum_ttl import ToolHistory, TtlRule, code_ttl, paper_ttl
from lamps.baselines.ordered_queue import OrderedQueue
from lamps.baselines.program_pins import ProgramPins
from lamps.defaults import DEFAULT_PROFILE
from lamps.mechanism.compat import SchedulerHooks, admitted_req_ids
from lamps.mechanism.hints import HINTS_KEY
from lamps.mechanism.paused_queue import is_paused
from lamps.mechanism.pausing import KvPauses

logger = logging.getLogger("vllm.lamps.continuum")

CONFIG_KEY = "continuum"
"""`additional_config["continuum"]`: `ttl` (a `TtlRule`: "paper", default, or "code") and
`profile` (the cost model whose prefill time is the reconstruction cost)."""

MIN_PIN_SECONDS = 0.01  # the fork's block-freeing hook in scheduler.py: "if length_of_pin > 0.01"


def _hint(request: Request, field: str) -> Any:
    extra = request.sampling_params.extra_args if request.sampling_params else None
    raw = (extra or {}).get(HINTS_KEY)
    return raw.get(field) if isinstance(raw, dict) else None


class ContinuumScheduler(SchedulerHooks, Scheduler):
    """vLLM's Scheduler with Continuum's TTL pins and program-level FCFS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = dict(self.vllm_config.additional_config.get(CONFIG_KEY, {}))
        self.ttl_rule = TtlRule.parse(config.pop("ttl", TtlRule.PAPER), f"{CONFIG_KEY}.ttl")
        explicit = config.pop("cost_model", None)  # as lamps' own config (the replay sends it)
        if explicit is not None:
            self._cost = CostModel(**dict(explicit))
        else:
            self._cost = CostModel.profile(config.pop("profile", DEFAULT_PROFILE))
        if config:
            raise ValueError(f"additional_config '{CONFIG_KEY}': unknown settings {sorted(config)}")
        self.waiting = OrderedQueue()
        self.kv_holding_waiting = OrderedQueue()
        self._clock: Callable[[], float] = time.monotonic
        self.kv_pauses = KvPauses(self)
        self.program_pins = ProgramPins(self.kv_pauses)
        self.history = ToolHistory()
        self._first_arrival: dict[str, float] = {}  # program -> its first turn's arrival
        self._departed: dict[str, tuple[str | None, float]] = {}  # program -> (tool, when)
        self._turns: dict[str, int] = {}
        self._deadlines: dict[str, float] = {}  # paused sessions kept until their TTL
        self._queued_at: dict[str, float] = {}  # request -> arrival, for evicted waits
        self._sessions: set[str] = set()  # streaming sessions (their turns pause them)
        self._stats: dict[str, int] = dict.fromkeys(
            ("pins", "no_pin", "expired", "pressure_unpins", "pinned_blocks", "turns"), 0
        )

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Replaces the wall clock (a replay passes its virtual clock)."""
        self._clock = clock

    def continuum_stats(self) -> dict[str, Any]:
        return {**self._stats, "mean_evicted_wait": self.history.mean_evicted_wait}

    def program_of(self, request: Request) -> str:
        """The request's program: vLLM's session id, the `program` hint, else its own id."""
        program = request.session_id or _hint(request, "program")
        return str(program) if program else request.request_id

    def ttl(self, request: Request) -> float:
        """The TTL of the call this turn ends with."""
        tool = _hint(request, "tool")
        tool = tool if isinstance(tool, str) and tool else None
        if self.ttl_rule == TtlRule.CODE:
            return code_ttl(self.history, tool)
        return paper_ttl(
            self.history, tool, request.num_computed_tokens, self._cost.iteration_seconds
        )

    # ----- the step -------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        now = self._clock()
        self._stats["expired"] += len(self.program_pins.expire(now))
        for request_id, deadline in list(self._deadlines.items()):
            if now >= deadline:
                self._drop_session(request_id)
                self._stats["expired"] += 1
        pinned = self.program_pins.is_pinned

        def key(request: Request) -> tuple[bool, float, float]:
            program = self.program_of(request)
            first = self._first_arrival.get(program, request.arrival_time)
            return (not pinned(program), first, request.arrival_time)

        self.waiting.reorder(key)
        self.kv_holding_waiting.reorder(key)
        self.running.sort(key=lambda r: key(r)[1:])
        self._relieve_pressure()
        return super().schedule(*args, **kwargs)

    def _relieve_pressure(self) -> None:
        """With at most one request running, give up pins rather than stall (see module)."""
        if len(self.running) > 1:
            return
        need = self._need()
        pool = self.kv_cache_manager.block_pool
        while need > pool.get_num_free_blocks():
            if self.program_pins.evict_latest() is None:
                latest = max(self._deadlines, key=self._deadlines.__getitem__, default=None)
                if latest is None:
                    return
                self._drop_session(latest)
            self._stats["pressure_unpins"] += 1

    def _need(self) -> int:
        size = self.block_size
        if self.running:
            request = self.running[0]
            total: int = -(-(request.num_computed_tokens + 1) // size)
            return max(total - len(self.kv_cache_manager.get_block_ids(request.request_id)[0]), 0)
        for queue in (self.kv_holding_waiting, self.waiting):
            if queue:
                request = queue.peek_request()
                if request.num_computed_tokens > 0:
                    return 1
                hit: int = self.kv_cache_manager.get_computed_blocks(request)[1]
                tokens: int = min(request.num_tokens - hit, self.max_num_scheduled_tokens)
                return -(-(hit + tokens) // size) - hit // size
        return 0

    def _drop_session(self, request_id: str) -> None:
        self._deadlines.pop(request_id, None)
        request = self.requests.get(request_id)
        if request is not None and is_paused(request):
            self.kv_pauses.discard(request)

    # ----- turns -------------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:
            if request.resumable:
                self._sessions.add(request.request_id)
            self._turn_arrived(request, kept=False)
        super().add_request(request)

    def _turn_arrived(self, request: Request, kept: bool) -> None:
        """A program's turn arrived (`kept`: a session that still holds its KV)."""
        now = self._clock()
        program = self.program_of(request)
        self._first_arrival.setdefault(program, request.arrival_time)
        departed = self._departed.pop(program, None)
        if departed is not None and departed[0] is not None:
            self.history.observe_call(departed[0], now - departed[1])
        if self.program_pins.is_pinned(program):
            self.program_pins.turn_queued(program)
        elif departed is not None and not kept:
            self._queued_at[request.request_id] = now  # its KV went: the wait counts in T

    def on_turn_end(self, request: Request) -> None:
        program = self.program_of(request)
        self._turns[program] = self._turns.get(program, 0) + 1
        self._stats["turns"] += 1
        tool = _hint(request, "tool")
        self._departed[program] = (tool if isinstance(tool, str) and tool else None, self._clock())
        if request.request_id in self._sessions:
            return  # a session: it pauses (on_pause), or its stream ends (on_freed)
        if _hint(request, "last") is True:
            self._end_program(program)
            return
        ttl = self.ttl(request)
        if ttl > MIN_PIN_SECONDS:
            self._stats["pinned_blocks"] += self.program_pins.pin_turn(
                program, request, self._clock() + ttl
            )
            self._stats["pins"] += 1
        else:
            self._stats["no_pin"] += 1

    def on_pause(self, request: Request) -> None:
        ttl = self.ttl(request)
        if ttl > MIN_PIN_SECONDS:
            self._deadlines[request.request_id] = self._clock() + ttl
            self._stats["pins"] += 1
            return
        self._stats["no_pin"] += 1
        self.kv_pauses.discard(request)

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        self._deadlines.pop(session.request_id, None)
        self._turn_arrived(session, kept=self.kv_pauses.frontier(session.request_id) is None)
        self.kv_pauses.resume(session)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        now = self._clock()
        for request_id in admitted_req_ids(scheduler_output):
            request = self.requests[request_id]
            self.program_pins.turn_admitted(self.program_of(request))
            queued_at = self._queued_at.pop(request_id, None)
            if queued_at is not None:
                self.history.observe_evicted_wait(now - queued_at)
        self.kv_pauses.admitted(scheduler_output)

    def on_freed(self, request: Request) -> None:
        self._deadlines.pop(request.request_id, None)
        self._queued_at.pop(request.request_id, None)
        self.waiting.discard(request)
        self.kv_holding_waiting.discard(request)
        self.kv_pauses.forget(request.request_id)
        if request.request_id in self._sessions:
            self._sessions.discard(request.request_id)
            self._end_program(self.program_of(request))
        # A stateless turn's program lives on until its last turn ends.

    def _end_program(self, program: str) -> None:
        self.history.observe_program(self._turns.pop(program, 0))
        self.program_pins.forget(program)
        for table in (self._first_arrival, self._departed):
            table.pop(program, None)
