"""N engines behind a router on one virtual clock (``lamps replay --engines N --router R``).

Every engine is a ``SimEngine`` (vLLM's real scheduler under the policy, its own step times
from the engine model); they run in parallel: the loop takes, in time order, whichever comes
first of a request to place, an engine's step that ends (its outputs reach its scheduler) and
an engine that is due to schedule (after a step, or an idle engine at its next event or copy
end). A turn is placed when it is sent, by the router (``lamps.replay.routers``) reading the
engines as they stand then, and reaches its engine's scheduler at that engine's next step
boundary, as a request reaches a busy EngineCore. In the session mode a conversation is
placed once, at its first turn, and every later turn (a streaming resume, or the new session
after a compaction, whose prefix is cached there) stays on that engine; in the stateless mode
every turn is a request the router places by its session id. The flow (``lamps.replay.
flows``), the records and the steady window are the cluster's, shared by the engines.

With one engine the order of events, and so every result, is the single engine's.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from lamps.replay.engine import _ARRIVE, _RESUME, SimEngine
from lamps.replay.flows import ArrivalFlow, Event, Start, flow_for
from lamps.replay.modes import ApiMode
from lamps.replay.policies import ReplayPolicy
from lamps.replay.profiles import EngineSettings, GpuProfile
from lamps.replay.records import KvUsageSeries, RequestRecord, RunResult
from lamps.replay.routers import Router
from lamps.workloads import Arrival


class ClusterEngine(SimEngine):
    """One engine of a cluster: the turns it is given, its steps; what follows goes back."""

    def __init__(
        self,
        cluster: SimCluster,
        index: int,
        profile: GpuProfile,
        policy: ReplayPolicy,
        flow: ArrivalFlow,
        settings: EngineSettings | None,
        kv_bin_seconds: float,
    ) -> None:
        self.cluster = cluster
        self.index = index
        super().__init__(
            profile,
            policy,
            flow,
            settings=settings,
            kv_bin_seconds=kv_bin_seconds,
            on_finish=cluster.conversation_done,
        )
        self.capacity_tokens = int(self.settings["kv_capacity_tokens"])
        self.ready = True  # schedules at its ``now`` (a single engine's first step is at 0)
        self.turns = 0

    def _add(self, arrival: Arrival) -> None:
        """The cluster starts the flow's first arrivals, once (not each engine)."""

    def _apply(self, events: list[Event]) -> None:
        self.cluster.apply(events)

    def _start_segment(self, rec: RequestRecord) -> None:
        self.turns += 1
        super()._start_segment(rec)

    def _segment_done(self, rec: RequestRecord) -> None:
        self.cluster.turn_done(rec, self)
        super()._segment_done(rec)

    def due(self) -> float | None:
        """When the engine acts next: its step's end, now (ready), or its next wake-up."""
        if self.step_end is not None:
            return self.step_end
        return self.now if self.ready else self.next_wake()

    def begin(self, t: float) -> None:
        """Schedules at ``t`` (or its ``now``, if later)."""
        self.now = max(self.now, t)
        self.ready = self.begin_step() is not None


class SimCluster:
    """Replays one flow through N engines (one policy instance each) behind a router."""

    def __init__(
        self,
        profile: GpuProfile,
        policies: Sequence[ReplayPolicy],
        router: Router,
        arrivals: list[Arrival] | ArrivalFlow,
        *,
        settings: EngineSettings | None = None,
        window_end: float | None = None,
        stop_at: float | None = None,
        kv_bin_seconds: float = 5.0,
        on_finish: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        if not policies:
            raise ValueError("cluster: at least one engine is needed")
        names = {p.name for p in policies}
        if len(names) != 1 or len({id(p) for p in policies}) != len(policies):
            raise ValueError(f"cluster: one policy, a fresh instance per engine; got {names}")
        flow = arrivals if isinstance(arrivals, ArrivalFlow) else flow_for(arrivals)
        self.flow = flow
        self.router = router
        self.api_mode = policies[0].api_mode
        self.window_end, self.stop_at, self.on_finish = window_end, stop_at, on_finish
        self.engines = [
            ClusterEngine(self, i, profile, p, flow, settings, kv_bin_seconds)
            for i, p in enumerate(policies)
        ]
        router.bind(self.engines, self.api_mode)
        self.records: list[RequestRecord] = []
        self.unfinished = 0
        self.placements: dict[int, list[int]] = {}  # arrival index -> engine of each turn
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._kv = KvUsageSeries(kv_bin_seconds)
        for a in flow.initial():
            self._add(a)

    # -- what the engines report ----------------------------------------------------------

    def _add(self, arrival: Arrival) -> None:
        rec = RequestRecord(arrival)
        self.records.append(rec)
        self.unfinished += 1
        heapq.heappush(self._events, (arrival.time, next(self._seq), _ARRIVE, rec))

    def apply(self, events: list[Event]) -> None:
        """What the flow starts next: new conversations and turns, placed when they are due."""
        for e in events:
            if isinstance(e, Start):
                self._add(e.arrival)
            else:
                heapq.heappush(self._events, (e.time, next(self._seq), _RESUME, e))

    def turn_done(self, rec: RequestRecord, engine: ClusterEngine) -> None:
        """A turn's response ended on ``engine``."""
        session = rec.arrival.request_id
        total = rec.turns[-1].input_tokens + rec.segment_tokens
        self.router.answered(session, engine.index, total, engine.now)
        if self.api_mode == ApiMode.STATELESS:
            self.router.released(engine.index)

    def conversation_done(self, rec: RequestRecord) -> None:
        """A conversation's last turn ended: the client ends its session at the router."""
        self.unfinished -= 1
        self.router.ended(rec.arrival.request_id, rec.finish_time or 0.0)
        if self.api_mode == ApiMode.SESSION:
            self.router.released(self.placements[rec.arrival.index][-1])
        if self.on_finish is not None:
            self.on_finish(rec)

    # -- the loop -------------------------------------------------------------------------

    def _place(self) -> None:
        """Places the next due turn and hands it to its engine."""
        t, _, kind, payload = heapq.heappop(self._events)
        rec, k = (payload, 0) if kind == _ARRIVE else (payload.record, payload.segment)
        session = rec.arrival.request_id
        tokens = self.flow.tokens.input_tokens(rec, k)
        placed = self.placements.setdefault(rec.arrival.index, [])
        for e in self.engines:
            if e.step_end is None and not e.ready:
                e.now = max(e.now, t)  # an idle engine's clock reads the time it is looked at
        if self.api_mode == ApiMode.SESSION and placed:
            engine = placed[-1]  # a streaming session's turns stay where it lives
        else:
            engine = self.router.place(session, tokens, t)
        placed.append(engine)
        self.router.sent(session, engine, tokens, t)
        self.engines[engine]._push(t, kind, payload)

    def _next_engine(self, stop_at: float) -> tuple[float, ClusterEngine] | None:
        """The engine that acts first: a step that ends (any time), else one due before
        ``stop_at``; ties to the lowest index."""
        best: tuple[float, ClusterEngine] | None = None
        for e in self.engines:
            t = e.due()
            if t is None or (e.step_end is None and t >= stop_at):
                continue
            if best is None or t < best[0]:
                best = (t, e)
        return best

    def run(self) -> RunResult:
        """Replays every arrival to completion (or to ``stop_at``) and returns the records."""
        wall = time.perf_counter()
        inf = float("inf")
        stop_at = self.stop_at if self.stop_at is not None else inf
        window_end = self.window_end if self.window_end is not None else inf
        while self.unfinished:
            nxt = self._next_engine(stop_at)
            due = self._events[0][0] if self._events else inf
            if due < stop_at and (nxt is None or due <= nxt[0]):
                self._place()
                continue
            if nxt is None:
                if not self._events and all(e.due() is None for e in self.engines):
                    raise RuntimeError(
                        f"cluster replay stalled under {self.router.name}: {self.unfinished} "
                        "conversations unfinished, nothing schedulable, no pending events"
                    )
                break  # what is left is due after stop_at
            t, engine = nxt
            if engine.step_end is not None:
                engine.finish_step()
                engine.ready = True
                usage = sum(e.scheduler.kv_cache_manager.usage for e in self.engines)
                self._kv.add(engine.now, usage / len(self.engines))
                continue
            if max(t, engine.now) >= window_end:
                self._snapshot()
                window_end = inf
            engine.begin(t)
        if window_end != inf:
            self._snapshot()  # everything finished before the window's end
        return self._result(time.perf_counter() - wall)

    def _snapshot(self) -> None:
        for rec in self.records:
            rec.tokens_at_window = rec.output_tokens

    # -- results --------------------------------------------------------------------------

    @property
    def swapped_in_tokens(self) -> int:
        """Tokens of KV copied back from host memory, every engine."""
        return sum(e.swapped_in_tokens for e in self.engines)

    def _result(self, wall_seconds: float) -> RunResult:
        now = max(e.now for e in self.engines)
        if self.unfinished and self.stop_at is not None:
            now = max(now, self.stop_at)
        per_engine = [{**e.policy.stats(), "swapped_bytes": e.swapped_bytes} for e in self.engines]
        return RunResult(
            policy=self.engines[0].policy.name,
            records=self.records,
            kv_usage=self._kv.close(),
            iterations=sum(e.iterations for e in self.engines),
            virtual_seconds=now,
            wall_seconds=wall_seconds,
            policy_stats=_summed(per_engine),
            stopped_at=now if self.unfinished else None,
            engine_stats={
                "compute_seconds": sum(e.compute_seconds for e in self.engines),
                "swap_stall_seconds": sum(e.stall_seconds for e in self.engines),
            },
            settings=self.engines[0].settings,
        )

    def cluster_row(self) -> dict[str, Any]:
        """The results row's keys of a multi-engine run: per engine, and the router's."""
        moved = [
            (rec, k)
            for rec in self.records
            for k, engine in enumerate(self.placements.get(rec.arrival.index, []))
            if 0 < k < len(rec.turns) and engine != self.placements[rec.arrival.index][k - 1]
        ]
        return {
            "engines": len(self.engines),
            "router": self.router.name,
            "router_stats": self.router.stats(),
            "moved_turns": len(moved),
            "moved_turns_prefill_tokens": sum(rec.turns[k].computed for rec, k in moved),
            "per_engine": [
                {
                    "turns": e.turns,
                    "iterations": e.iterations,
                    "compute_seconds": e.compute_seconds,
                    "swapped_bytes": e.swapped_bytes,
                }
                for e in self.engines
            ],
        }


def _summed(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-engine counters added up (a value that is not a number: the first engine's)."""
    out = dict(stats[0])
    for other in stats[1:]:
        for key, value in other.items():
            mine = out.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and isinstance(mine, int | float) and not isinstance(mine, bool):
                out[key] = mine + value
    return out
