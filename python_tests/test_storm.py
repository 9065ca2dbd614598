"""Seeded storms through the LAMPS schedulers, stepped as vLLM's engine core pipelines them.

Each seed builds a scheduler with a KV cache small enough to preempt, then throws at it plain
requests and multi-turn streaming sessions (API pauses of random length), aborts of requests in
every state, and spells of vLLM's PAUSED_NEW pause state. After every engine step it checks
what must hold whatever the policy decides; at the end, that everything finished and every
block came back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from pipelined import PipelinedDriver
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.request import RequestStatus

from lamps.harness import SettableClock, make_request
from lamps.vllm import LampsScheduler, LampsSyncScheduler

# Discard and swap as cheap as preserve for pauses of a few seconds: the hints below spread
# pauses over preserve, discard and (with a connector) swap.
COST = {
    "a_ms_per_token": 0.05,
    "c_ms": 10.0,
    "kv_bytes_per_token": 1000.0,
    "link_bytes_per_second": 1e9,
}
# The async seeds caught the freed-request-left-in-the-ranked-queue bug in 7 of 300 (with
# ~1 s per 25 seeds); chunks keep a failure's seed readable.
CHUNK = 50
ASYNC_CHUNKS = range(8)
SYNC_CHUNKS = range(2)


@dataclass
class Program:
    """A plain request (one turn) or a streaming session of several turns."""

    request_id: str
    turns: list[tuple[int, int]]  # (new prompt tokens, max_tokens) per turn
    gaps: list[int]  # engine steps between a turn's end and the next input
    api_seconds: float
    turn: int = 0
    resume_at: int | None = None
    delivered: int = 0
    aborted: bool = False
    finished: bool = False
    expected: int = field(init=False)

    def __post_init__(self) -> None:
        self.expected = sum(m for _, m in self.turns)

    @property
    def session(self) -> bool:
        return len(self.turns) > 1


def make_program(rng: random.Random, index: int) -> Program:
    turns = [(rng.randint(8, 160), rng.choice([1, 2, 3, rng.randint(4, 24)]))]
    if rng.random() < 0.8:
        turns += [
            (rng.randint(1, 40), rng.choice([1, 2, rng.randint(3, 12)]))
            for _ in range(rng.randint(1, 3))
        ]
    gaps = [rng.randint(0, 8) for _ in turns]
    return Program(f"p{index}", turns, gaps, rng.choice([0.01, 1.0, 5.0, 60.0, 600.0]))


class Storm:
    """One seeded storm against one scheduler."""

    def __init__(self, make: Any, cls: type, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = SettableClock()
        self.sched = make(
            cls,
            num_blocks=self.rng.choice([16, 24, 32]),
            max_num_seqs=self.rng.choice([4, 8, 16]),
            max_num_batched_tokens=self.rng.choice([64, 128, 256]),
            async_scheduling=cls is LampsScheduler,
            additional_config={
                "lamps": {
                    "log_interval_s": 0.0,
                    "cost_model": COST,
                    "starvation_threshold": self.rng.choice([0, 5, 100]),
                    "ranking": self.rng.random() < 0.7,
                }
            },
        )
        self.sched.set_clock(self.clock)
        self.driver = PipelinedDriver(self.sched, queue_size=2 if cls is LampsScheduler else 1)
        self.pool = self.sched.kv_cache_manager.block_pool
        self.free_at_start = self.pool.get_num_free_blocks()
        self.programs = [make_program(self.rng, i) for i in range(self.rng.randint(20, 40))]
        self.by_id = {p.request_id: p for p in self.programs}
        self.pending = list(self.programs)
        self.token_base = 0

    def _tokens(self, n: int) -> list[int]:
        self.token_base += n
        return list(range(self.token_base - n, self.token_base))

    def _params(self, p: Program) -> dict[str, Any]:
        return {"lamps": {"predicted_api_seconds": p.api_seconds, "tool": "t"}}

    def _add_turn(self, p: Program) -> None:
        new, max_tokens = p.turns[p.turn]
        last = p.turn == len(p.turns) - 1
        self.sched.add_request(
            make_request(
                p.request_id,
                self._tokens(new),
                max_tokens=max_tokens,
                extra_args=self._params(p),
                resumable=p.session,
                arrival_time=self.clock.now,
            )
        )
        if p.session and last:
            # EngineCore closes a session with a non-resumable request under the same id.
            self.sched.add_request(
                make_request(p.request_id, [0], max_tokens=1, arrival_time=self.clock.now)
            )

    def _maybe_act(self, step: int) -> None:
        rng = self.rng
        if self.pending and rng.random() < 0.9:
            self._add_turn(self.pending.pop(0))
        for p in self.programs:
            if p.resume_at is not None and step >= p.resume_at and not p.aborted:
                p.resume_at = None
                self._add_turn(p)
        live = [
            p
            for p in self.programs
            if p.request_id in self.sched.requests and not p.aborted and not p.finished
        ]
        if live and rng.random() < 0.03:
            victim = rng.choice(live)
            victim.aborted = True
            self.driver.abort(victim.request_id)
        if rng.random() < 0.02:
            state = self.sched.pause_state
            self.sched.set_pause_state(
                PauseState.UNPAUSED if state == PauseState.PAUSED_NEW else PauseState.PAUSED_NEW
            )

    def _on_outputs(self, outputs: list[Any], step: int) -> None:
        for o in outputs:
            p = self.by_id[o.request_id]
            assert not p.finished, f"{o.request_id}: output after it finished"
            p.delivered += len(o.new_token_ids)
            if o.finish_reason is None:
                continue
            request = self.sched.requests.get(o.request_id)
            if request is not None and request.status == RequestStatus.WAITING_FOR_STREAMING_REQ:
                p.turn += 1
                p.resume_at = step + p.gaps[p.turn]
            else:
                p.finished = True

    def check(self) -> None:
        """Invariants that hold after every engine step, whatever the policy."""
        sched = self.sched
        live = {rid: r for rid, r in sched.requests.items() if not r.is_finished()}
        # LAMPS' side table is exactly the live requests.
        assert sched.lamps_num_tracked == len(live), (sched.lamps_num_tracked, len(live))
        for rid in live:
            assert sched.lamps_state(rid) is not None, rid
        # Every live request is in exactly one place.
        seen: dict[str, int] = {}
        for r in [*sched.running, *sched.waiting, *sched.kv_holding_waiting]:
            seen[r.request_id] = seen.get(r.request_id, 0) + 1
            assert r.request_id in live, f"{r.request_id} is queued but not live"
        assert seen == dict.fromkeys(live, 1), {k: v for k, v in seen.items() if v != 1}
        # vLLM's own definition of unfinished requests.
        paused = RequestStatus.WAITING_FOR_STREAMING_REQ
        if sched.pause_state == PauseState.PAUSED_NEW:
            expected = len(sched.running) + sum(
                1 for r in sched.kv_holding_waiting if r.status != paused
            )
        else:
            expected = sum(1 for r in live.values() if r.status != paused)
        assert sched.get_num_unfinished_requests() == expected

    def run(self, max_steps: int = 4000) -> None:
        for step in range(max_steps):
            self.clock.now += 0.05
            self._maybe_act(step)
            self._on_outputs(self.driver.step(), step)
            self.check()
            done = not self.pending and all(
                p.finished or (p.aborted and p.request_id not in self.sched.requests)
                for p in self.programs
            )
            if done and not self.driver.busy():
                break
        else:
            raise AssertionError(f"storm did not finish in {max_steps} steps")
        self.sched.set_pause_state(PauseState.UNPAUSED)
        for p in self.programs:
            if not p.aborted:
                assert p.delivered == p.expected, (p.request_id, p.delivered, p.expected)
        assert not self.sched.requests
        assert self.sched.lamps_num_tracked == 0
        assert self.pool.get_num_free_blocks() == self.free_at_start


def run_seeds(make: Any, cls: type, chunk: int) -> None:
    for seed in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        try:
            Storm(make, cls, seed).run()
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__} storm seed {seed}: {e}") from e


@pytest.mark.parametrize("chunk", ASYNC_CHUNKS)
def test_storm_async(make_vllm_scheduler: Any, chunk: int) -> None:
    run_seeds(make_vllm_scheduler, LampsScheduler, chunk)


@pytest.mark.parametrize("chunk", SYNC_CHUNKS)
def test_storm_sync(make_vllm_scheduler: Any, chunk: int) -> None:
    run_seeds(make_vllm_scheduler, LampsSyncScheduler, chunk)
