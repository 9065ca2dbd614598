"""Router policies of a multi-engine replay (``lamps replay --engines N --router R``).

A router places a request on one of N engines when it arrives (``lamps.replay.cluster``):
in the stateless API mode every turn (a new HTTP request carrying its session id, as
``X-Session-ID``), in the session mode a conversation's first turn only (a streaming
session's resumes stay on its engine, as vLLM keeps them, ``core_client.py:1643-1645``).
Each router reads what its source reads, from the engines' schedulers in-process:

- ``round-robin``: vllm-router's ``round_robin`` (no affinity, no load).
- ``least-loaded``: vLLM's data-parallel balancer, ``DPLBAsyncMPClient.
  get_core_engine_for_request`` (vLLM 0.32, ``vllm/v1/engine/core_client.py:1642-1697``).
- ``session-affine``: vllm-router's ``sticky_least_loaded``
  (``src/policies/sticky_least_loaded.rs``).
- ``thunderagent`` and ``lamps-aware``: ``lamps.replay.program_routers``.

What no router models here: health checks and failures (every engine stays healthy), HTTP
latency, the router's own queueing.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from lamps.replay.policies import ApiMode

if TYPE_CHECKING:  # vLLM is imported when engines run, not when the CLI lists the routers
    from vllm.v1.core.sched.scheduler import Scheduler


class RoutedEngine(Protocol):
    """What a router may read of an engine: its scheduler and its KV capacity."""

    index: int
    scheduler: Scheduler
    capacity_tokens: int


class Router:
    """Base: places requests on engines and hears how they end."""

    name = ""
    needs_lamps = False  # whether it reads LAMPS' gauges (the engines must run LAMPS)

    def __init__(self) -> None:
        self.engines: Sequence[RoutedEngine] = ()
        self.api_mode: ApiMode = ApiMode.STATELESS

    def bind(self, engines: Sequence[RoutedEngine], api_mode: ApiMode) -> None:
        """The engines to place on, before any request (``api_mode``: the policies')."""
        if not engines:
            raise ValueError(f"router {self.name}: no engine")
        self.engines, self.api_mode = engines, api_mode

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        """The engine (index) for a request of ``session`` arriving at ``now``."""
        raise NotImplementedError

    def sent(self, session: str, engine: int, prompt_tokens: int, now: float) -> None:
        """A turn of ``session`` goes to ``engine`` (placed or a streaming resume)."""

    def answered(self, session: str, engine: int, total_tokens: int, now: float) -> None:
        """A turn's response ended (``total_tokens``: its prompt plus output, as ``usage``)."""

    def released(self, engine: int) -> None:
        """A vLLM request the router placed on ``engine`` finished (a stateless turn; a
        streaming session when it closes)."""

    def ended(self, session: str, now: float) -> None:
        """The client ended ``session`` (its last turn answered)."""

    def stats(self) -> dict[str, Any]:
        """Router counters for the results row."""
        return {}


class RoundRobin(Router):
    """vllm-router ``round_robin`` (``src/policies/round_robin.rs``): the next engine in turn."""

    name = "round-robin"

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        engine = self._next
        self._next = (self._next + 1) % len(self.engines)
        return engine


STATS_INTERVAL = 0.1
"""Seconds: the DP coordinator publishes the engines' counts at most every 100 ms when they
changed (``vllm/v1/engine/coordinator.py:154, 266-290``, ``min_stats_update_interval_ms``)."""


class LeastLoaded(Router):
    """vLLM's data-parallel balancer (``core_client.py:1642-1697``), one API server.

    Per engine, a snapshot ``[waiting, running, kv_cache_usage]`` that engines publish from
    ``get_request_counts()`` and ``get_kv_cache_usage()`` (``core.py:1561-1571``), refreshed
    here at most every ``STATS_INTERVAL`` (the coordinator's); the score
    ``max(client_count * in_flight, waiting + running) + waiting * 6 * max(0, usage - 0.5)``
    (1672-1683, the penalty only with waiting requests), the first lowest score scanning from
    a start index that rotates after each placement (1660-1664, 1694); the chosen engine's
    snapshot waiting count grows by ``client_count`` until the next refresh (1688); in-flight
    counts this client's unfinished requests per engine (1696, 1706-1710).
    """

    name = "least-loaded"
    client_count = 1  # one API server front-end (``--api-server-count 1``)

    def bind(self, engines: Sequence[RoutedEngine], api_mode: ApiMode) -> None:
        super().bind(engines, api_mode)
        self._snapshot = [[0.0, 0.0, 0.0] for _ in engines]  # core_client.py:1447-1449
        self._in_flight = [0] * len(engines)
        self._start = 0  # eng_start_index of client 0 (1634-1636)
        self._refreshed = -math.inf

    def _refresh(self, now: float) -> None:
        if now - self._refreshed < STATS_INTERVAL:
            return
        self._refreshed = now
        for counts, engine in zip(self._snapshot, self.engines, strict=True):
            running, waiting = engine.scheduler.get_request_counts()
            counts[:] = [waiting, running, engine.scheduler.get_kv_cache_usage()]

    def score(self, engine: int) -> float:
        """The balancer's score of ``engine`` from the snapshot and the in-flight count."""
        waiting, running, usage = self._snapshot[engine]
        score = max(self.client_count * self._in_flight[engine], waiting + running)
        if waiting:
            score += waiting * 6.0 * max(0.0, usage - 0.5)
        return score

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        self._refresh(now)
        n = len(self.engines)
        best, best_score = 0, math.inf
        for i in range(n):
            idx = (self._start + i) % n
            score = self.score(idx)
            if score < best_score:
                best, best_score = idx, score
        self._snapshot[best][0] += self.client_count
        self._start = (self._start + 1) % n
        self._in_flight[best] += 1
        return best

    def released(self, engine: int) -> None:
        self._in_flight[engine] -= 1


SESSION_EXPIRATION = 7200.0
"""Seconds: ``sticky_least_loaded.rs:41`` (``VLLM_ROUTER_SLL_SESSION_EXPIRATION_IN_S``)."""
SWEEP_INTERVAL = 60.0  # sticky_least_loaded.rs:47


def rendezvous_weight(key: str, engine: int) -> int:
    """Highest-random-weight hash of ``key`` for ``engine`` (a stable 64-bit hash stands in
    for vllm-router's ``fbi_hash``, ``sticky_least_loaded.rs:169``)."""
    digest = hashlib.blake2b(f"{key}:engine{engine}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SessionAffine(Router):
    """vllm-router ``sticky_least_loaded`` (``src/policies/sticky_least_loaded.rs``, at
    335c57e): a session's requests go to the engine it was assigned (241-259); a new session
    goes to the engine with fewest active sessions, ties broken by rendezvous hashing of the
    session id (150-179, 271-281); a session is active until the client's ``finish_session``
    (293-303) or ``SESSION_EXPIRATION`` since its last request, swept at most every
    ``SWEEP_INTERVAL`` (121-143)."""

    name = "session-affine"

    def __init__(self, expiration: float = SESSION_EXPIRATION) -> None:
        super().__init__()
        self.expiration = expiration
        self._sessions: dict[str, tuple[int, float]] = {}  # session -> (engine, last access)
        self._active: Counter[int] = Counter()
        self._swept = 0.0
        self.expired = 0

    def active(self, engine: int) -> int:
        """Active sessions the router counts on ``engine``."""
        return self._active[engine]

    def _sweep(self, now: float) -> None:
        if now - self._swept < SWEEP_INTERVAL:
            return
        self._swept = now
        for session, (engine, last) in list(self._sessions.items()):
            if now - last >= self.expiration:
                del self._sessions[session]
                self._active[engine] -= 1
                self.expired += 1

    def place(self, session: str, prompt_tokens: int, now: float) -> int:
        self._sweep(now)
        known = self._sessions.get(session)
        if known is not None:
            self._sessions[session] = (known[0], now)
            return known[0]
        least = min(self._active[i] for i in range(len(self.engines)))
        ties = [i for i in range(len(self.engines)) if self._active[i] == least]
        engine = max(ties, key=lambda i: rendezvous_weight(session, i))
        self._sessions[session] = (engine, now)
        self._active[engine] += 1
        return engine

    def ended(self, session: str, now: float) -> None:
        known = self._sessions.pop(session, None)
        if known is not None:
            self._active[known[0]] -= 1

    def stats(self) -> dict[str, Any]:
        return {"sessions_expired": self.expired}


ROUTERS: dict[str, tuple[type[Router], str]] = {}
"""Router name -> (class, the source it follows), for ``--router`` and ``--help``."""


def register(cls: type[Router], source: str) -> None:
    """Adds a router policy to the registry."""
    if cls.name in ROUTERS:
        raise ValueError(f"router {cls.name!r} is already registered")
    ROUTERS[cls.name] = (cls, source)


register(RoundRobin, "vllm-router round_robin: each request to the next engine, no affinity")
register(
    LeastLoaded,
    "vLLM's data-parallel balancer (core_client.py): waiting + running, in-flight floor, "
    "a KV-pressure penalty on waiting requests; no affinity between HTTP turns",
)
register(
    SessionAffine,
    "vllm-router sticky_least_loaded: a session sticks to its engine; a new one goes where "
    "the router counts fewest active sessions",
)


def make_router(name: str) -> Router:
    """The router policy called ``name``."""
    import lamps.replay.program_routers  # noqa: F401  (registers thunderagent, lamps-aware)

    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(router_names())}")
    return ROUTERS[name][0]()


def router_names() -> tuple[str, ...]:
    """Every registered router policy."""
    import lamps.replay.program_routers  # noqa: F401

    return tuple(ROUTERS)


def describe_routers() -> str:
    """One line per router policy with its source (for ``--help``)."""
    import lamps.replay.program_routers  # noqa: F401

    return "\n".join(f"  {name}: {source}" for name, (_, source) in ROUTERS.items())
