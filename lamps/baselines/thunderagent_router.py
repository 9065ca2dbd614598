"""ThunderAgent's program admission rules, without HTTP or vLLM: programs, capacity, queue.

Source: `HaoKang-Timmy/ThunderAgent` at 260e227, `ThunderAgent/scheduler/router.py` (R),
`backend/state.py` (S), `backend/vllm_metrics.py` (M), `config.py` (C). Router mode "tr".

- Capacity of a backend, in tokens: `block_size * num_gpu_blocks` from vLLM's
  `cache_config_info` (M 22-25). Used: `reasoning + acting_token_weight * acting` tokens of its
  registered programs (`int()`, S 90-104) plus `BUFFER_PER_PROGRAM` = 100 per program (S 23),
  less `shared_tokens` (S 54: 0, its updater `update_shared_tokens`, S 126-133, has no caller);
  `remaining_capacity` = capacity - used (S 182-191); with `use_acting_token_decay` an acting
  program's tokens weigh `2**-t` after `t` seconds of acting, for resuming only (S 193-211).
  Defaults: `acting_token_weight` 1.0, no decay, a check every 5 s (C 27-29).
- A request of a program (R 290-372): `step_count += 1`; its tokens are the request's size
  (R 302-303). A paused program's request waits for its resume, the program now REASONING
  (R 330-338). A new program (first step) is admitted when the waiting queue is empty and a
  backend has `remaining >= tokens + 100` (the one with fewest active tokens, R 249-281, 341-351),
  else it is queued, paused (R 352-362). Otherwise the program turns REASONING and goes on.
- A response (R 374-412): the program turns ACTING with `total_tokens = usage.total_tokens`
  (prompt + completion); if it was marked for pause it is paused now (R 588-604).
- Every `scheduler_interval` (R 660-683, the first after one interval): resume, then for a
  backend with `remaining < 0`, pause until safe (R 685-717): pause ACTING programs, fewest
  tokens first (R 519-529, 545-572: unregistered, into the queue with their tokens then); with
  none left, mark REASONING ones (not yet marked, fewest tokens first, R 531-543, 574-586). A
  mark does not change `remaining`, so the loop marks every REASONING program then.
- Resume (R 719-844): backends with `remaining > 100`; the queue sorted by the tokens it
  recorded at pause (R 492-505), grouped REASONING with step > 1, then new (step 1), then
  ACTING; in that order a program is selected if the cumulative `tokens + 100` fits the total
  (later smaller ones may still fit); the selection is placed Best Fit Decreasing (R 793-838).
  A resumed program is registered again (R 606-639) and its waiting request proceeds.
- A request that waited 1,800 s is resumed regardless of capacity (R 846-868).
- A client releases its program after its last turn (R 428-461, app.py 123-137).

What differs from the proxy: token counts are exact (the proxy estimates a request's tokens
as its JSON length over a characters-per-token ratio it learns, R 114-117, 302-303, 393-405);
clients are non-streaming (a streaming client adds 20 tokens at a time while it decodes,
R 414-426); `future_paused_tokens` (R 574-604) is kept by the proxy but no rule reads it, so it
is not kept here; backends are always healthy (no health checks). Placement over several
backends (`place_new_program`, `place_best_fit_decreasing`, `least_loaded`) is kept apart from
the single-backend admission so that a multi-engine replay can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

BUFFER_PER_PROGRAM = 100  # S 23
SCHEDULER_INTERVAL = 5.0  # C 27, __main__.py 28
ACTING_TOKEN_WEIGHT = 1.0  # C 28, __main__.py 30
WAIT_TIMEOUT = 1800.0  # R 846
REASONING, ACTING = "reasoning", "acting"


@dataclass
class Program:
    """One program as the proxy tracks it (program/state.py 33-47)."""

    program_id: str
    status: str = REASONING
    paused: bool = False
    backend: str | None = None
    origin_backend: str | None = None
    total_tokens: int = 0
    step_count: int = 0
    marked_for_pause: bool = False
    acting_since: float | None = None
    waiting_since: float | None = None  # a request of it is held since then


@dataclass
class Backend:
    """One backend's KV accounting (backend/state.py)."""

    url: str
    capacity_tokens: int
    acting_token_weight: float = ACTING_TOKEN_WEIGHT
    programs: dict[str, Program] = field(default_factory=dict)

    def reasoning_tokens(self) -> int:
        """Tokens of its REASONING programs (S 90-93)."""
        return sum(p.total_tokens for p in self.programs.values() if p.status == REASONING)

    def acting_tokens(self) -> int:
        """Tokens of its ACTING programs (S 95-99)."""
        return sum(p.total_tokens for p in self.programs.values() if p.status == ACTING)

    @property
    def active_tokens(self) -> int:
        """Reasoning tokens plus weighted acting tokens (S 101-104)."""
        return int(self.reasoning_tokens() + self.acting_token_weight * self.acting_tokens())

    def remaining(self) -> int:
        """Capacity left for new programs, negative when over (S 182-191; shared tokens 0)."""
        return self.capacity_tokens - self.active_tokens - len(self.programs) * BUFFER_PER_PROGRAM

    def remaining_with_decay(self, now: float) -> int:
        """Capacity left with each acting program weighted `2**-t` (S 193-211)."""
        decayed = sum(
            p.total_tokens * 2.0 ** -(now - p.acting_since)
            for p in self.programs.values()
            if p.status == ACTING and p.acting_since is not None
        )
        used = int(self.reasoning_tokens() + decayed)
        return self.capacity_tokens - used - len(self.programs) * BUFFER_PER_PROGRAM


# ----- placement over backends (a multi-engine replay's part) -----------------------------------


def place_new_program(backends: Iterable[Backend], tokens: int) -> Backend | None:
    """The backend with fewest active tokens that has room for `tokens` + 100 (R 267-281)."""
    best: Backend | None = None
    for backend in backends:
        if backend.remaining() < tokens + BUFFER_PER_PROGRAM:
            continue
        if best is None or backend.active_tokens < best.active_tokens:
            best = backend
    return best


def least_loaded(backends: Iterable[Backend]) -> Backend:
    """The backend with fewest programs (R 171-190), for a forced resume of a new program."""
    return min(backends, key=lambda b: len(b.programs))


def place_best_fit_decreasing(
    selected: list[Program], capacities: list[tuple[Backend, int]]
) -> list[tuple[Program, Backend]]:
    """Places programs, largest first, on the backend with most room left (R 793-838)."""
    caps = sorted(capacities, key=lambda c: -c[1])
    ordered = sorted(selected, key=lambda p: -p.total_tokens)
    placed: list[tuple[Program, Backend]] = []
    if not ordered:
        return placed
    min_required = ordered[-1].total_tokens + BUFFER_PER_PROGRAM
    for program in ordered:
        if not caps or min_required > caps[0][1]:
            break
        required = program.total_tokens + BUFFER_PER_PROGRAM
        if required > caps[0][1]:
            continue
        backend, left = caps[0]
        placed.append((program, backend))
        left -= required
        if left > BUFFER_PER_PROGRAM:
            caps[0] = (backend, left)
            caps.sort(key=lambda c: -c[1])
        else:
            caps.pop(0)
    return placed


# ----- the proxy's program state machine ---------------------------------------------------------


class ProgramRouter:
    """Programs, the global waiting queue, and the rules that admit, pause and resume them."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        scheduler_interval: float = SCHEDULER_INTERVAL,
        use_acting_token_decay: bool = False,
    ) -> None:
        if not backends:
            raise ValueError("thunderagent: no backend")
        if not scheduler_interval > 0:
            raise ValueError(f"thunderagent: scheduler_interval must be > 0: {scheduler_interval}")
        self.backends = {b.url: b for b in backends}
        self.programs: dict[str, Program] = {}
        self.queue: dict[str, int] = {}  # paused program -> its tokens when paused (R 93, 478)
        self.interval = scheduler_interval
        self.decay = use_acting_token_decay
        self.next_check = scheduler_interval
        self._resumed: list[str] = []  # programs whose held requests may proceed, in order
        self.counts = dict.fromkeys(
            ("admitted", "queued", "paused", "marked", "resumed", "forced", "checks"), 0
        )

    # ----- requests and responses ----------------------------------------------------------

    def on_request(self, program_id: str, tokens: int, now: float) -> bool:
        """A request of the program arrives: True when it goes on to vLLM now (R 290-372)."""
        p = self.programs.setdefault(program_id, Program(program_id))
        p.step_count += 1
        p.total_tokens = tokens
        p.status, p.acting_since = REASONING, None
        if p.paused:
            p.waiting_since = p.waiting_since if p.waiting_since is not None else now
            return False
        if p.step_count == 1 and p.backend is None:
            backend = None if self.queue else place_new_program(self.backends.values(), tokens)
            if backend is not None:
                self._register(p, backend)
                self.counts["admitted"] += 1
                return True
            p.paused, p.waiting_since = True, now
            self.queue[program_id] = p.total_tokens
            self.counts["queued"] += 1
            return False
        if p.backend is None:
            raise RuntimeError(f"thunderagent: program {program_id} is active on no backend")
        return True

    def on_response(self, program_id: str, total_tokens: int, now: float) -> None:
        """Its response ends: the program acts (runs its tool) (R 374-412)."""
        p = self.programs.get(program_id)
        if p is None:
            return  # released meanwhile
        p.status, p.acting_since, p.total_tokens = ACTING, now, total_tokens
        if p.marked_for_pause:
            p.marked_for_pause = False
            self._pause(p)

    def release(self, program_id: str) -> None:
        """The client ends its program (R 428-461); a request still held goes on."""
        p = self.programs.pop(program_id, None)
        if p is None:
            return
        self.queue.pop(program_id, None)
        if p.backend is not None:
            self.backends[p.backend].programs.pop(program_id, None)
        if p.waiting_since is not None:
            self._resumed.append(program_id)

    def take_resumed(self) -> list[str]:
        """Programs resumed since the last call, in order: their held requests proceed."""
        resumed, self._resumed = self._resumed, []
        return resumed

    # ----- the periodic check --------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """The next check or wait timeout while a request is held (None: none is)."""
        waits = [p.waiting_since for p in self.programs.values() if p.waiting_since is not None]
        if not waits:
            return None
        return min(self.next_check, min(waits) + WAIT_TIMEOUT)

    def tick(self, now: float) -> None:
        """Runs what is due by `now`: wait timeouts, then the periodic check."""
        for p in list(self.programs.values()):
            if p.waiting_since is not None and now >= p.waiting_since + WAIT_TIMEOUT:
                self._force_resume(p)
        if now >= self.next_check:
            self.check(now)
            self.next_check = (now // self.interval + 1) * self.interval

    def check(self, now: float) -> None:
        """One scheduler pass: resume what fits, then pause until safe (R 671-683)."""
        self.counts["checks"] += 1
        self._greedy_resume(now)
        for backend in self.backends.values():
            if backend.remaining() < 0:
                self._pause_until_safe(backend)

    def _pause_until_safe(self, backend: Backend) -> None:
        while backend.remaining() < 0:
            acting = self._sorted(backend, lambda p: p.status == ACTING)
            if acting:
                self._pause(acting[0])
                continue
            reasoning = self._sorted(
                backend, lambda p: p.status == REASONING and not p.marked_for_pause
            )
            if not reasoning:
                break
            reasoning[0].marked_for_pause = True
            self.counts["marked"] += 1

    def _greedy_resume(self, now: float) -> None:
        capacities: list[tuple[Backend, int]] = []
        for backend in self.backends.values():
            left = backend.remaining_with_decay(now) if self.decay else backend.remaining()
            if left > BUFFER_PER_PROGRAM:
                capacities.append((backend, left))
        total = sum(left for _, left in capacities)
        if not capacities or total <= 0:
            return
        paused = sorted(
            (self.programs[pid] for pid in self.queue if pid in self.programs),
            key=lambda p: self.queue[p.program_id],
        )
        reasoning = [p for p in paused if p.step_count != 1 and p.status == REASONING]
        new = [p for p in paused if p.step_count == 1]
        acting = [p for p in paused if p.step_count != 1 and p.status != REASONING]
        selected: list[Program] = []
        cumulative = 0
        for p in reasoning + new + acting:
            if cumulative + p.total_tokens + BUFFER_PER_PROGRAM <= total:
                selected.append(p)
                cumulative += p.total_tokens + BUFFER_PER_PROGRAM
        for p, backend in place_best_fit_decreasing(selected, capacities):
            self.queue.pop(p.program_id, None)
            self._resume(p, backend)

    # ----- transitions ---------------------------------------------------------------------

    def _sorted(self, backend: Backend, keep: Callable[[Program], bool]) -> list[Program]:
        chosen = [p for p in self.programs.values() if p.backend == backend.url and keep(p)]
        return sorted(chosen, key=lambda p: p.total_tokens)

    def _register(self, p: Program, backend: Backend) -> None:
        backend.programs[p.program_id] = p
        p.backend = backend.url

    def _pause(self, p: Program) -> None:
        """R 545-572: off its backend, into the queue with its tokens."""
        if p.backend is None:
            return
        self.backends[p.backend].programs.pop(p.program_id, None)
        self.queue[p.program_id] = p.total_tokens
        p.origin_backend, p.backend, p.paused = p.backend, None, True
        self.counts["paused"] += 1

    def _resume(self, p: Program, backend: Backend) -> None:
        """R 606-639: registered again; a held request proceeds."""
        if not p.paused:
            return
        self._register(p, backend)
        p.origin_backend, p.paused = None, False
        self.counts["resumed"] += 1
        if p.waiting_since is not None:
            p.waiting_since = None
            self._resumed.append(p.program_id)

    def _force_resume(self, p: Program) -> None:
        """R 857-868: after the wait timeout, resumed regardless of capacity."""
        if self.queue.pop(p.program_id, None) is None or not p.paused:
            p.waiting_since = None
            self._resumed.append(p.program_id)
            return
        origin = self.backends.get(p.origin_backend) if p.origin_backend else None
        self.counts["forced"] += 1
        self._resume(p, origin or least_loaded(self.backends.values()))
