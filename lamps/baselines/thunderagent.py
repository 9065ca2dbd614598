"""ThunderAgent (`HaoKang-Timmy/ThunderAgent`) in front of stock vLLM, as a gate on its scheduler.

ThunderAgent is a proxy: clients tag each request with a `program_id` (its body, or
`extra_body`; "default" without one, app.py 46-53); the proxy holds a request until its program
is admitted, then forwards it to vLLM unchanged (app.py 56-100). Its rules, with their lines,
are in `thunderagent_router`. Here the proxy is a gate in front of vLLM's own `add_request`:
`ThunderAgentScheduler.add_request` forwards a request of an admitted program at once and holds
the others; before each `schedule()` the gate runs the proxy's periodic check when it is due
and forwards the held requests of the programs it resumed, in the order it resumed them. vLLM's
scheduler then runs unchanged (FCFS as configured): the gate only delays when requests reach it,
as a proxy does, and never reorders what vLLM schedules. A forwarded request's `arrival_time`
is when it reaches vLLM, as vLLM's server stamps it.

A request's program is the `program_id` field of its `lamps` hints, else vLLM's
`Request.session_id`, else "default"; `release: true` releases the program after that request's
response (the client's `POST /programs/release`). The response's `usage.total_tokens` is the
request's prompt plus output tokens. The backend's capacity is `block_size * num_gpu_blocks`
of this engine, as the proxy reads it from vLLM's `/metrics`.

What differs from the real proxy: no HTTP hop (no proxy latency), no health checks (the backend
is always healthy), one backend (placement over several, `thunderagent_router.place_*`, is
for a multi-engine replay), the check runs at the first step boundary after it is due rather
than on its own timer (`next_wakeup` lets an idle replay wake for it), and the differences the
router's docstring lists (exact token counts, non-streaming clients).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutputs
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request, RequestStatus

from lamps.baselines.thunderagent_router import (
    ACTING_TOKEN_WEIGHT,
    SCHEDULER_INTERVAL,
    Backend,
    ProgramRouter,
)
from lamps.mechanism.hints import HINTS_KEY

CONFIG_KEY = "thunderagent"
"""`additional_config["thunderagent"]`: `scheduler_interval` (s, default 5), `acting_token_weight`
(default 1.0), `use_acting_token_decay` (default false): the proxy's command-line options."""

BACKEND = "vllm"
DEFAULT_PROGRAM = "default"  # app.py 53


def _hints(request: Request) -> dict[str, Any]:
    extra = request.sampling_params.extra_args if request.sampling_params else None
    raw = (extra or {}).get(HINTS_KEY)
    return raw if isinstance(raw, dict) else {}


def program_of(request: Request) -> str:
    """The request's program: its `program_id` hint, vLLM's session id, else "default"."""
    program = _hints(request).get("program_id") or request.session_id
    return str(program) if program else DEFAULT_PROGRAM


class ThunderAgentScheduler(Scheduler):
    """vLLM's Scheduler behind ThunderAgent's program admission (router mode "tr")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = dict(self.vllm_config.additional_config.get(CONFIG_KEY, {}))
        interval = float(config.pop("scheduler_interval", SCHEDULER_INTERVAL))
        weight = float(config.pop("acting_token_weight", ACTING_TOKEN_WEIGHT))
        decay = config.pop("use_acting_token_decay", False)
        if config or not isinstance(decay, bool) or not weight >= 0:
            raise ValueError(
                f"additional_config '{CONFIG_KEY}': unknown or bad settings "
                f"{config or {'acting_token_weight': weight, 'use_acting_token_decay': decay}}"
            )
        blocks = self.cache_config.num_gpu_blocks or self.kv_cache_config.num_blocks
        capacity = blocks * self.cache_config.block_size
        self.router = ProgramRouter(
            [Backend(BACKEND, capacity, weight)],
            scheduler_interval=interval,
            use_acting_token_decay=decay,
        )
        self._clock: Callable[[], float] = time.monotonic
        self._held: dict[str, list[Request]] = {}  # program -> its requests the proxy holds
        self._turns: dict[str, tuple[str, bool, Request]] = {}  # request -> program, release
        self._held_seconds = 0.0
        self._held_requests = 0

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Replaces the wall clock (a replay passes its virtual clock)."""
        self._clock = clock

    # ----- the gate ------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        now = self._clock()
        self._forward_resumed(now)
        program = program_of(request)
        release = _hints(request).get("release") is True
        self._turns[request.request_id] = (program, release, request)
        if self.router.on_request(program, request.num_prompt_tokens, now):
            super().add_request(request)
            return
        self._held.setdefault(program, []).append(request)
        self._held_requests += 1

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        self._forward_resumed(self._clock())
        return super().schedule(*args, **kwargs)

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> dict[int, EngineCoreOutputs]:
        outputs: dict[int, EngineCoreOutputs] = super().update_from_output(
            scheduler_output, model_runner_output
        )
        now = self._clock()
        for engine_outputs in outputs.values():
            for out in engine_outputs.outputs:
                if out.finish_reason is None:
                    continue
                turn = self._turns.pop(out.request_id, None)
                if turn is None:
                    continue
                program, release, request = turn
                total = request.num_prompt_tokens + request.num_output_tokens
                self.router.on_response(program, total, now)
                if release:
                    self.router.release(program)
        return outputs

    def finish_requests(
        self, request_ids: str | Iterable[str] | None, finished_status: RequestStatus
    ) -> list[Request]:
        # A client that gives up: a held request never reached vLLM; a forwarded one sends no
        # usage back, so the proxy leaves its program as it was.
        ids = {request_ids} if isinstance(request_ids, str) else set(request_ids or self._turns)
        for program in list(self._held):
            kept = [r for r in self._held[program] if r.request_id not in ids]
            if kept:
                self._held[program] = kept
            else:
                del self._held[program]
        for request_id in ids:
            self._turns.pop(request_id, None)
        aborted: list[Request] = super().finish_requests(request_ids, finished_status)
        return aborted

    def get_num_unfinished_requests(self) -> int:
        # Held requests keep the engine stepping, so that the gate gets to forward them.
        in_vllm: int = super().get_num_unfinished_requests()
        return in_vllm + self.num_held

    # ----- for the replay and the results -----------------------------------------------------

    @property
    def num_held(self) -> int:
        """Requests the proxy holds now."""
        return sum(len(held) for held in self._held.values())

    def next_wakeup(self) -> float | None:
        """When the proxy next acts on held requests (None: it holds none)."""
        return self.router.next_wakeup() if self._held else None

    def thunderagent_stats(self) -> dict[str, Any]:
        """Program admissions, pauses, resumes and the time requests were held."""
        return {
            **{f"programs_{k}": v for k, v in self.router.counts.items()},
            "held_requests": self._held_requests,
            "held_seconds": self._held_seconds,
        }

    def _forward_resumed(self, now: float) -> None:
        self.router.tick(now)
        for program in self.router.take_resumed():
            for request in self._held.pop(program, ()):
                self._held_seconds += now - request.arrival_time
                request.arrival_time = now  # vLLM stamps a request when it reaches it
                super().add_request(request)
