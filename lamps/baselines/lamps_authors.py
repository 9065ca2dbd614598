"""LAMPS as its authors' code does it ("MARS"), as a vLLM V1 scheduler on the pause mechanism.

Source: `mars-repository/mars-codebase` (commit 4cedd10), `vllm/core/scheduler_v2.py` unless
said otherwise, run as its scripts run it (`exps/6B_bench.sh`: `--api-policy V --policy-config
V2 --chunk-fill --starvation-avoidance True --starvation-threshold 100 --starvation-quantum
100000`). Each rule, and where it is:

- Strategy classified at arrival and at each resume (`add_seq_group` 156-167,
  `resume_seq_group` 276-280 call `classify` 104-154) from *predicted* values:
  `w_p = predicted API time x ceil((prompt + predicted output before the call) / 64) * 64`
  (105-107; `prompt` is the original prompt, `get_prompt_len`; 64-token blocks), `w_d`
  InferCept's formula with GPT-J-6B's constants (661-678, a = 0.0463, c = 10), `w_s` its own
  (680-696, a1 = 0.136, a2 = 0.181, c = 22.5); Preserve if `w_p <= w_d, w_s`, else Swap if
  `w_s <= w_p, w_d`, else Discard (129-146). With these constants `w_s > w_d` always (per
  chunk it charges 0.092 s per token against `w_d`'s 0.0139 s, and twice the other requests'
  share at a larger rate), so in effect Preserve against Discard.
- Pauses start preserved (`pause_seq_group` 240-246); each iteration, the preserved pauses
  whose classified waste is below the largest are demoted to their class (Discard: freed; Swap:
  swapped if the host has room; Preserve: kept), the largest stay as preemption targets
  (742-795).
- Only waiting + swapped requests are ranked, by the memory-over-time score, smallest first
  (821-835, `policy.py` V2 `get_priority` 105-161); the running list stays FCFS by arrival
  (799, `policy.py` 116-117). The score here is the core's `score_batch` (LAMPS' own formula,
  one call ahead, with the classified strategy), not V2's block-rounded approximation.
- Starvation (839-850, 889-897; `vllm/sequence.py` 215-251): a waiting request that was
  scheduled once counts iterations spent waiting; at 100 it gets a quantum of 100,000
  iterations at the head (the quantum counts down each iteration it is promoted or runs);
  never-scheduled requests are not promoted; the counters reset when a call starts
  (`vllm/engine/llm_engine.py` 744).
- Swap budgets disabled (927-930: 1e9 blocks) and passive eviction discards: under memory
  pressure the preemption target, then delayed or the youngest running requests, are freed
  (378-423, InferCept's `passive_discard_by_order` with the swap branch cut). That is
  `passive_swap.PassiveSwap` with no swap path and an unbounded allowance.
- An iteration schedules at most `mlimit` = 384 tokens (921-924). That is an engine setting
  applied to every policy alike: here the scheduler's own budget, which the formulas below
  use wherever the authors' code writes 384 (the replay's `paper` settings give 384).
- Predictions in its benchmark: the true value plus Gaussian noise of a given fraction,
  clamped (`benchmarks/fixed_final_tput_bench_real.py` 118-119); the replay policy adds it.

What differs: vLLM V1 keeps a resumed preserved session in its KV-holding queue (FCFS), where
MARS appends it to the running list; the prefix cache stays on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus, StreamingUpdate

from lamps import BatchState, CostModel, Strategy, score_batch
from lamps.baselines.infercept_model import GPTJ_6B, discard_waste
from lamps.baselines.ordered_queue import OrderedQueue
from lamps.baselines.passive_swap import PassiveSwap
from lamps.defaults import DEFAULT_PROFILE
from lamps.mechanism.compat import SchedulerHooks
from lamps.mechanism.hints import Hints, parse_hints
from lamps.mechanism.paused_queue import PausedAsidePriorityQueue, is_paused
from lamps.mechanism.pausing import KvPauses

logger = logging.getLogger("vllm.lamps.authors")

CONFIG_KEY = "lamps_authors"
"""`additional_config["lamps_authors"]`: `profile` (the core's cost model for the score),
`starvation_threshold` (100) and `starvation_quantum` (100,000)."""

AUTHORS_BLOCK_TOKENS = 64  # the authors' fork's KV block (105, 111)
STARVATION_THRESHOLD = 100  # exps/6B_bench.sh, --starvation-threshold
STARVATION_QUANTUM = 100_000  # exps/6B_bench.sh, --starvation-quantum
NO_SWAP_ALLOWANCE = 10**9  # 928-930: swap budgets disabled


def swap_waste(tokens: int, running_batch: int, running_tokens: int, budget: int) -> float:
    """The authors' `w_s` (680-696) of `tokens` (blocks x block size), `budget` tokens per
    iteration where their code writes 384."""
    c_h = max(budget - running_batch, 1)
    n = max((tokens + c_h - 1) // c_h - 1, 1)
    f_ch = 0.136 * c_h / 1000
    f_s = (0.181 * budget + 22.5) / 1000
    return f_s * n * tokens + f_ch * n * running_tokens * 2


@dataclass
class _State:
    hints: Hints
    strategy: Strategy = Strategy.PRESERVE
    waste: float = 0.0
    scheduled_once: bool = False
    starvation_counter: int = 0
    starvation_quantum: int = 0


class LampsAuthorsScheduler(SchedulerHooks, Scheduler):
    """vLLM's Scheduler with the LAMPS authors' classification, demotion, ranking, starvation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = dict(self.vllm_config.additional_config.get(CONFIG_KEY, {}))
        self._cost = CostModel.profile(config.pop("profile", DEFAULT_PROFILE))
        self.starvation_threshold = int(config.pop("starvation_threshold", STARVATION_THRESHOLD))
        self.starvation_quantum = int(config.pop("starvation_quantum", STARVATION_QUANTUM))
        if config:
            raise ValueError(f"additional_config '{CONFIG_KEY}': unknown key(s) {sorted(config)}")
        self.waiting = OrderedQueue()
        self.kv_holding_waiting = PausedAsidePriorityQueue()
        self.kv_pauses = KvPauses(self)
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "pauses", "demoted_discard", "demoted_swap", "classified_preserve",
                "classified_discard", "classified_swap", "promotions", "paused_swaps",
                "running_swaps", "swapped_blocks", "victim_discards", "running_recomputes",
                "host_full_discards", "delayed", "prefix_hit_tokens", "recomputed_tokens",
            ),
            0,
        )  # fmt: skip
        self._evict = PassiveSwap(self, self.kv_pauses, self._stats)
        self._states: dict[str, _State] = {}
        self._preserved: dict[str, Request] = {}

    def authors_stats(self) -> dict[str, Any]:
        """Cumulative counters."""
        return dict(self._stats)

    def strategy_of(self, request_id: str) -> Strategy | None:
        """The class of the request's current (or next) call."""
        state = self._states.get(request_id)
        return None if state is None else state.strategy

    # ----- classification ---------------------------------------------------------------------

    def _running_batch(self) -> tuple[int, int]:
        batch = sum(max(r.num_tokens - r.num_computed_tokens, 0) for r in self.running)
        tokens = sum(self._evict.gpu_blocks(r) for r in self.running) * self.block_size
        return batch, tokens

    def classify(self, request: Request, state: _State) -> None:
        """Choose the strategy of the request's next call from its predictions (104-154)."""
        hints = state.hints
        api = hints.predicted_api_seconds or 0.0
        blocks = math.ceil(
            (request.num_prompt_tokens + (hints.predicted_output_tokens or 0))
            / AUTHORS_BLOCK_TOKENS
        )
        tokens = blocks * AUTHORS_BLOCK_TOKENS
        batch, running_tokens = self._running_batch()
        w_p = api * tokens
        budget = self.max_num_scheduled_tokens
        w_d = discard_waste(tokens, batch, running_tokens, GPTJ_6B, budget)
        w_s = swap_waste(tokens, batch, running_tokens, budget)
        if w_p <= w_d and w_p <= w_s:
            state.strategy, state.waste = Strategy.PRESERVE, w_p
        elif w_s <= w_p and w_s <= w_d:
            state.strategy, state.waste = Strategy.SWAP, w_s
        else:
            state.strategy, state.waste = Strategy.DISCARD, w_d
        self._stats[f"classified_{state.strategy.name.lower()}"] += 1

    def _demote(self) -> list[Request]:
        """Demote every preserved pause but the costliest to its class (742-795)."""
        pauses = [
            r
            for r in self._preserved.values()
            if is_paused(r) and self.kv_pauses.frontier(r.request_id) is None
        ]
        self._preserved = {r.request_id: r for r in pauses}
        if not pauses:
            return []
        max_waste = max(self._states[r.request_id].waste for r in pauses)
        victims = []
        for request in pauses:
            state = self._states[request.request_id]
            if state.waste >= max_waste:
                victims.append(request)
            elif state.strategy == Strategy.DISCARD:
                self.kv_pauses.discard(request)
                del self._preserved[request.request_id]
                self._stats["demoted_discard"] += 1
            elif state.strategy == Strategy.SWAP and self._evict.swap_whole(request):
                del self._preserved[request.request_id]
                self._stats["demoted_swap"] += 1
        return victims

    # ----- ranking and starvation -------------------------------------------------------------

    def _rank(self) -> None:
        """Order the waiting queue: promoted first, then by score (821-850)."""
        queued = self.waiting.queued()
        if not queued:
            return
        n = len(queued)
        states = [self._states[r.request_id] for r in queued]
        context = np.fromiter((r.num_tokens for r in queued), np.int64, n)
        computed = np.fromiter((r.num_computed_tokens for r in queued), np.int64, n)
        output = np.fromiter(
            (max(s.hints.predicted_output_tokens or 1, 1) for s in states), np.int64, n
        )
        api = np.fromiter((s.hints.predicted_api_seconds or 0.0 for s in states), np.float64, n)
        ret = np.fromiter((s.hints.api_return_tokens or 0 for s in states), np.int64, n)
        strategy = np.fromiter((int(s.strategy) for s in states), np.int8, n)
        batch, running_tokens = self._running_batch()
        scores = score_batch(
            context, np.maximum(context - computed, 0), np.arange(n + 1, dtype=np.int64),
            output, api, ret, strategy, BatchState(
                token_budget=self.max_num_scheduled_tokens,
                running_tokens_per_iteration=float(batch),
                running_context_tokens=float(running_tokens),
            ),
            self._cost, False,
        )  # fmt: skip
        promoted = [self._check_starvation(r, s) for r, s in zip(queued, states, strict=True)]
        keys = zip(promoted, scores.tolist(), strict=True)
        order = {id(r): (not p, score) for r, (p, score) in zip(queued, keys, strict=True)}
        self.waiting.reorder(lambda r: order[id(r)])

    def _check_starvation(self, request: Request, state: _State) -> bool:
        """`check_starvation_high_priority` (sequence.py 233-245)."""
        if request.status not in (RequestStatus.WAITING, RequestStatus.PREEMPTED):
            return False
        if state.starvation_quantum > 0:
            state.starvation_quantum -= 1
            return True
        if self.starvation_threshold and state.starvation_counter >= self.starvation_threshold:
            state.starvation_quantum = self.starvation_quantum
            state.starvation_counter = 0
            self._stats["promotions"] += 1
        return False

    def _count_starvation(self) -> None:
        """After scheduling: waiting requests scheduled once count on, running ones reset or
        spend their quantum (889-897; sequence.py 223-231, 247-251)."""
        for request in self.waiting.queued():
            state = self._states[request.request_id]
            if state.scheduled_once and state.starvation_quantum == 0:
                state.starvation_counter += 1
        for request in self.running:
            state = self._states[request.request_id]
            if state.starvation_quantum > 0:
                state.starvation_quantum -= 1
            else:
                state.starvation_counter = 0

    # ----- the iteration ----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        victims = self._demote()
        self._rank()
        self.running.sort(key=lambda r: r.arrival_time)
        delayed = self._evict.relieve(
            victims, NO_SWAP_ALLOWANCE, self.max_num_scheduled_tokens, lambda _: 0.0
        )
        held = set(delayed)
        if held:
            self.running = [r for r in self.running if r not in held]
        try:
            out = super().schedule(*args, **kwargs)
        finally:
            if held:
                self.running = sorted([*self.running, *delayed], key=lambda r: r.arrival_time)
        self._count_starvation()
        return out

    # ----- requests and vLLM's events ---------------------------------------------------------

    def _hints(self, request: Request) -> Hints:
        hints, _ = parse_hints(
            request.sampling_params.extra_args if request.sampling_params else None,
            request.request_id, logger,
        )  # fmt: skip
        return hints

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:
            state = _State(self._hints(request))
            self._states[request.request_id] = state
            self.classify(request, state)
        super().add_request(request)

    def on_pause(self, request: Request) -> None:
        state = self._states[request.request_id]
        state.starvation_counter = state.starvation_quantum = 0
        self._preserved[request.request_id] = request
        self._stats["pauses"] += 1

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        self._preserved.pop(session.request_id, None)
        state = self._states[session.request_id]
        state.hints = self._hints(session)
        self.classify(session, state)
        self.kv_pauses.resume(session)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        for request_id in scheduler_output.num_scheduled_tokens:
            self._states[request_id].scheduled_once = True
        for admission in self.kv_pauses.admitted(scheduler_output):
            self._stats["prefix_hit_tokens"] += admission.restored_tokens
            self._stats["recomputed_tokens"] += admission.recomputed_tokens

    def on_freed(self, request: Request) -> None:
        self.waiting.discard(request)
        self._preserved.pop(request.request_id, None)
        self._states.pop(request.request_id, None)
        self._evict.forget(request.request_id)
        self.kv_pauses.forget(request.request_id)
