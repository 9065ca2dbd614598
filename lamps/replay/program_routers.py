"""Router policies that place whole programs (sessions) by their KV: ThunderAgent, LAMPS-aware.

- ``thunderagent``: ThunderAgent's placement of programs over backends by KV capacity
  (``HaoKang-Timmy/ThunderAgent`` at 260e227, ``ThunderAgent/scheduler/router.py``, R; the
  accounting, ``lamps.baselines.thunderagent_router``). Its admission (holding a program's
  requests while the backends are full) is not the router's part here: run the engines with
  the ``thunderagent`` policy (``lamps.baselines.thunderagent``, one backend each) for both.
- ``lamps-aware``: a new session goes to the engine whose LAMPS memory over time is lowest
  (``lamps_memory_over_time_token_seconds``, ``LampsScheduler.lamps_memory_over_time``,
  docs/many-engines.md); a session sticks until its engine holds none of its KV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lamps._core import Strategy
from lamps.baselines.thunderagent_router import (
    ACTING,
    BUFFER_PER_PROGRAM,
    REASONING,
    Backend,
    Program,
    place_new_program,
)
from lamps.replay.policies import ApiMode
from lamps.replay.routers import RoutedEngine, Router, register

if TYPE_CHECKING:  # vLLM is imported when engines run, not when the CLI lists the routers
    from vllm.v1.core.sched.scheduler import Scheduler


class ThunderAgentPlacement(Router):
    """ThunderAgent's program placement over backends (router mode "tr").

    Each backend (engine) counts its programs' tokens: a program is REASONING with its
    request's prompt tokens while a request is out (R 298-303, 370-371; exact counts here),
    ACTING with the response's ``usage.total_tokens`` after it (R 389-408), until the client
    releases it (R 428-461). A new program goes to the backend with the fewest active tokens
    among those with ``remaining >= tokens + 100`` (R 249-281, 341-351); the capacity is the
    engine's ``block_size * num_gpu_blocks`` (``backend/vllm_metrics.py`` 22-25). A program
    stays on its backend. Where no backend has room ThunderAgent queues the program until its
    periodic check resumes it onto the backend with the most room (Best Fit Decreasing,
    R 793-838); this router has no queue (admission is the engines' part), so it places the
    program there at once.
    """

    name = "thunderagent"

    def bind(self, engines: Sequence[RoutedEngine], api_mode: ApiMode) -> None:
        super().bind(engines, api_mode)
        self.backends = [Backend(f"engine{e.index}", e.capacity_tokens) for e in engines]
        self._programs: dict[str, Program] = {}
        self.over_capacity = 0  # new programs placed where ThunderAgent would have queued them

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        known = self._programs.get(session)
        if known is not None and known.backend is not None:
            return self._index(known.backend)
        backend = place_new_program(self.backends, prompt_tokens)
        if backend is None:
            self.over_capacity += 1
            backend = max(self.backends, key=lambda b: b.remaining())
        program = Program(session, backend=backend.url, total_tokens=prompt_tokens)
        backend.programs[session] = self._programs[session] = program
        return self._index(backend.url)

    def _index(self, url: str) -> int:
        return next(i for i, b in enumerate(self.backends) if b.url == url)

    def sent(self, session: str, engine: int, prompt_tokens: int, now: float) -> None:
        program = self._programs.get(session)
        if program is not None:
            program.status, program.acting_since = REASONING, None
            program.total_tokens = prompt_tokens
            program.step_count += 1

    def answered(self, session: str, engine: int, total_tokens: int, now: float) -> None:
        program = self._programs.get(session)
        if program is not None:
            program.status, program.acting_since = ACTING, now
            program.total_tokens = total_tokens

    def ended(self, session: str, now: float) -> None:
        program = self._programs.pop(session, None)
        if program is not None and program.backend is not None:
            self.backends[self._index(program.backend)].programs.pop(session, None)

    def stats(self) -> dict[str, Any]:
        return {
            "placed_over_capacity": self.over_capacity,
            "buffer_per_program": BUFFER_PER_PROGRAM,
        }


def kept_kv(scheduler: Scheduler, session: str) -> list[Any] | None:
    """What a LAMPS engine keeps of an HTTP session's KV: None when it keeps all of it (a
    request of it is live, its parked turn is pinned or in host memory), else the hashes of
    the leading blocks of its parked turn still in the prefix cache (empty: none)."""
    state = scheduler.lamps_sessions.session(session)
    if state is None:
        return []  # ended (session_end, idle timeout) or never seen
    if state.live:
        return None
    parked = state.parked
    if parked is None:
        return []
    if parked.strategy in (Strategy.PRESERVE, Strategy.SWAP):
        return None
    return list(parked.hashes[: parked.intact()])


def caches_all(scheduler: Scheduler, hashes: Sequence[Any]) -> bool:
    """Whether every block of ``hashes`` is in the scheduler's prefix cache (tail first: a
    miss is most likely there)."""
    pool = scheduler.kv_cache_manager.block_pool
    return all(pool.get_cached_block(h, [0]) is not None for h in reversed(hashes))


class LampsAware(Router):
    """New sessions where LAMPS' memory over time is lowest; sticky while the KV is there.

    A new session goes to the engine with the lowest ``lamps_memory_over_time()`` (the value
    of its ``lamps_memory_over_time_token_seconds`` gauge, read when the session arrives; the
    engines are of one profile, so the values compare), ties to the engine with fewest of this
    router's active sessions, then the lowest index. A stateless session's later turn goes to
    its engine while that engine holds any of its KV that no other engine holds (``kept_kv``,
    ``caches_all``: a per-session view, which a deployed router would get from the engines'
    KV events, as vllm-router's ``kv_aware`` does; LAMPS' parked-KV gauges are totals): a
    prefix every engine caches (the system prompt all sessions share) keeps no session; once
    its engine holds nothing of its own, the turn is placed as a new session. A streaming
    session never moves.
    """

    name = "lamps-aware"
    needs_lamps = True

    def bind(self, engines: Sequence[RoutedEngine], api_mode: ApiMode) -> None:
        plain = [e.index for e in engines if not hasattr(e.scheduler, "lamps_memory_over_time")]
        if plain:
            raise ValueError(
                f"router {self.name}: engines {plain} run no LAMPS scheduler (it reads LAMPS' "
                "memory over time); use it with a lamps policy"
            )
        super().bind(engines, api_mode)
        self._sessions: dict[str, int] = {}
        self._active: Counter[int] = Counter()
        self.replaced = 0

    def load(self, engine: int) -> float:
        """The engine's LAMPS memory over time, token-seconds."""
        return float(self.engines[engine].scheduler.lamps_memory_over_time())

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        engine = self._sessions.get(session)
        if engine is not None:
            if self.api_mode == ApiMode.SESSION or self._keeps(engine, session):
                return engine
            self.replaced += 1
            self._active[engine] -= 1
        keys = [(self.load(i), self._active[i], i) for i in range(len(self.engines))]
        engine = min(keys)[2]
        self._sessions[session] = engine
        self._active[engine] += 1
        return engine

    def _keeps(self, engine: int, session: str) -> bool:
        """Whether ``engine`` holds KV of ``session`` that no other engine caches."""
        kept = kept_kv(self.engines[engine].scheduler, session)
        if kept is None:
            return True
        others = (e.scheduler for e in self.engines if e.index != engine)
        return bool(kept) and not any(caches_all(other, kept) for other in others)

    def ended(self, session: str, now: float) -> None:
        engine = self._sessions.pop(session, None)
        if engine is not None:
            self._active[engine] -= 1

    def stats(self) -> dict[str, Any]:
        return {"sessions_replaced": self.replaced}


register(
    ThunderAgentPlacement,
    "ThunderAgent (HaoKang-Timmy/ThunderAgent) program placement: a new program to the backend "
    "with fewest active tokens that has room for it; programs stay (admission: its policy)",
)
register(
    LampsAware,
    "LAMPS-aware: a new session to the engine with the lowest LAMPS memory over time; a "
    "session moves only once its engine holds none of its KV",
)
