"""InferCept (ICML 2024) as its code does it, as a vLLM V1 scheduler on the LAMPS pause mechanism.

Source: `WukLab/InferCept` (commit f9b2195), `vllm/core/scheduler_v2.py`, API policy `V` as
its benchmark runs it (`exps/6B_bench.sh`: `--api-policy V --chunk-fill --swap-space 128`).
Each rule, and where it is:

- Every pause starts as Preserve (`pause_seq_group`, 143-149): the session keeps its KV.
- Before every iteration (`_schedule_chunk_and_fill`, 609-656), for each preserved pause:
  `w_p` = remaining API time x its GPU tokens, `w_d` = InferCept's chunked-recompute waste
  (`infercept_model`); the pauses with `w_d < w_p` are discard candidates; every candidate
  whose `w_d` is below the largest candidate `w_d` is discarded at once (`pause_by_recompute`,
  96-104); the costliest stays preserved as the *preemption target*. Pauses with
  `w_p <= w_d` stay preserved and are never evicted by this rule.
- No swap at pause time: swaps are passive, under memory pressure, from victims' tails,
  within the iteration's allowance `t_sout` (`passive_swap`, which cites 274-340 and
  477-565); a full CPU swap space discards swapped requests first, longest remaining API time
  first; running requests can be swapped too.
- Loads are paced by `t_sin` per iteration (`_set_max_ragged_batch`, 732-746; `_schedule`,
  496-512: a request swaps in over several iterations), through the swap connector's paced
  loads.
- If no request is waiting, the oldest swapped request is converted to recompute
  (`_active_discard`, 567-573).
- FCFS by original arrival everywhere (`PolicyFactory` "fcfs", 60; policy.py 27-34, arrival of
  the sequence group, kept across its API calls): vLLM's priority queues with equal
  priorities, the running list sorted by arrival before each step; the replay keeps a
  resumed session's first arrival time.
- API durations are the trace's exact values (`final_tput_bench_real.py` 94-123 passes
  `api_exec_time`); here the hint `predicted_api_seconds` carries it.
- An iteration schedules at most `mlimit` tokens (scheduler_v2.py 741-745; 384 in its runs),
  recompute chunks mixed with decodes. `mlimit` is an engine setting applied to every policy
  alike: here it is the scheduler's own budget (`max_num_batched_tokens`), which InferCept's
  formulas use wherever its code uses `mlimit` (the replay's `paper` settings: 384).

What differs, and why: vLLM V1 frees whole requests, so a tail swap is a partial swap (pinned
head, swapped tail) that releases the victim, which is swapped once (`passive_swap`); a
running request InferCept *delays* is taken off the running list for that step (vLLM would
preempt it otherwise); if the plan misjudges, vLLM's own fallback preempts the youngest
running request by recompute. vLLM's prefix cache stays on, so a discarded context is often
partly cached at resume (InferCept's fork had none; its wastes assume a full recompute).
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
from lamps.baselines.infercept_model import (
    CONSTANTS,
    GPTJ_6B,
    InferCeptConstants,
    allowance_blocks,
    constants_for,
    discard_waste,
    preserve_waste,
    swap_allowances,
)
from lamps.baselines.passive_swap import PassiveSwap
from lamps.defaults import DEFAULT_PROFILE
from lamps.mechanism.compat import SchedulerHooks
from lamps.mechanism.hints import parse_hints
from lamps.mechanism.paused_queue import PausedAsidePriorityQueue, is_paused
from lamps.mechanism.pausing import KvPauses

logger = logging.getLogger("vllm.lamps.infercept")

CONFIG_KEY = "infercept"
"""`additional_config["infercept"]`: `{"profile": NAME}` (the model's constants) or
`{"cost_model": {"a_ms_per_token": A, "c_ms": C}}` (iteration constants; the swap allowance
keeps GPT-J-6B's)."""

STAT_KEYS = (
    "pauses",
    "discarded",  # by the per-iteration rule
    "discarded_tokens",
    "paused_swaps",  # victims' first evictions (later ones give up more of the same head)
    "running_swaps",
    "swapped_blocks",  # blocks given up to swaps, against the t_sout allowances
    "victim_discards",  # paused victims discarded because the host pool was full
    "running_recomputes",  # running victims preempted by recompute (host pool full)
    "host_full_discards",  # swapped requests whose copy was dropped for room
    "active_discards",  # swapped requests converted to recompute when none waited
    "delayed",  # running requests delayed a step (allowance short, or waiting for a copy)
    "prefix_hit_tokens",
    "recomputed_tokens",
)


def constants_from_config(config: Any) -> InferCeptConstants:
    """InferCept's constants from `additional_config["infercept"]`."""
    if not isinstance(config, dict):
        raise ValueError(f"additional_config '{CONFIG_KEY}' must be an object, got {config!r}")
    unknown = set(config) - {"profile", "cost_model"}
    if unknown:
        raise ValueError(f"additional_config '{CONFIG_KEY}': unknown key(s) {sorted(unknown)}")
    if "cost_model" in config:
        cost = config["cost_model"]
        return InferCeptConstants(
            float(cost["a_ms_per_token"]), float(cost["c_ms"]), GPTJ_6B.swap_a, GPTJ_6B.swap_b
        )
    profile = config.get("profile", DEFAULT_PROFILE)
    if profile in CONSTANTS:
        return constants_for(profile)
    # A model InferCept never profiled: its iteration constants from the named cost model,
    # the swap allowance's from GPT-J-6B (as with an explicit cost_model).
    try:
        cost = CostModel.profile(profile)
    except ValueError as e:
        raise ValueError(f"additional_config '{CONFIG_KEY}': {e}") from e
    return InferCeptConstants(cost.a_ms_per_token, cost.c_ms, GPTJ_6B.swap_a, GPTJ_6B.swap_b)


class InferCeptScheduler(SchedulerHooks, Scheduler):
    """vLLM's Scheduler with InferCept's per-iteration pause decisions and passive swap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = PausedAsidePriorityQueue()
        self.kv_holding_waiting = PausedAsidePriorityQueue()
        self.constants = constants_from_config(
            self.vllm_config.additional_config.get(CONFIG_KEY, {})
        )
        self._clock: Callable[[], float] = time.monotonic
        self.kv_pauses = KvPauses(self)
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._swap = PassiveSwap(self, self.kv_pauses, self._stats)
        self._preserved: dict[str, Request] = {}  # Preserve pauses with GPU blocks left
        self._resume_at: dict[str, float] = {}  # every pause's end (exact API time)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Replaces the wall clock (a replay passes its virtual clock)."""
        self._clock = clock

    def infercept_stats(self) -> dict[str, Any]:
        """Cumulative counters (see STAT_KEYS)."""
        return dict(self._stats)

    def remaining_api(self, request_id: str) -> float:
        """Remaining API time of a pause (negative once overdue, as InferCept computes it)."""
        return self._resume_at.get(request_id, 0.0) - self._clock()

    # ----- the iteration ----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        block_size = self.block_size
        free_tokens = self.kv_cache_manager.block_pool.get_num_free_blocks() * block_size
        t_sout, t_sin = swap_allowances(free_tokens, self.constants, self.max_num_scheduled_tokens)
        swapper = self.kv_pauses.swapper
        if swapper is not None:
            swapper.lamps_pace_loads(allowance_blocks(t_sin, block_size) * block_size)
        self._swap.prune()
        self._active_discard()
        victims, out_blocks = self.pause_victims(
            self._clock(), allowance_blocks(t_sout, block_size)
        )
        delayed = self._swap.relieve(
            victims, out_blocks, self.max_num_scheduled_tokens, self.remaining_api
        )
        self.running.sort(key=lambda r: r.arrival_time)
        if not delayed:
            return super().schedule(*args, **kwargs)
        held = set(delayed)
        self.running = [r for r in self.running if r not in held]
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self.running = sorted([*self.running, *delayed], key=lambda r: r.arrival_time)

    def _batch(self) -> tuple[int, int]:
        """(tokens the running requests still compute, their GPU tokens) (632, 592-593)."""
        running_batch = sum(max(r.num_tokens - r.num_computed_tokens, 0) for r in self.running)
        running_tokens = sum(self._swap.gpu_blocks(r) for r in self.running) * self.block_size
        return running_batch, running_tokens

    def pause_wastes(self, now: float) -> list[tuple[Request, float, float, int]]:
        """(pause, w_p, w_d, GPU blocks) of every Preserve pause (630-646)."""
        running_batch, running_tokens = self._batch()
        wastes = []
        for request in list(self._preserved.values()):
            # A partially swapped pause stays Preserve on what is left on the GPU (256-269).
            blocks = self._swap.gpu_blocks(request)
            if blocks == 0:
                del self._preserved[request.request_id]  # swapped whole, or discarded
                continue
            tokens = blocks * self.block_size
            w_p = preserve_waste(self._resume_at[request.request_id] - now, tokens)
            w_d = discard_waste(
                tokens, running_batch, running_tokens, self.constants, self.max_num_scheduled_tokens
            )
            wastes.append((request, w_p, w_d, blocks))
        return wastes

    def pause_victims(self, now: float, out_blocks: int) -> tuple[list[Request], int]:
        """Discard every candidate but the costliest; the costliest are the victims (630-655).
        Returns them (evicted last first) and the swap-out allowance left (all of it)."""
        candidates = [(w_d, r) for r, w_p, w_d, _ in self.pause_wastes(now) if w_d < w_p]
        if not candidates:
            return [], out_blocks
        max_waste = max(w for w, _ in candidates)
        victims = []
        for w_d, request in candidates:
            if w_d < max_waste:
                self.discard_pause(request)
            else:
                victims.append(request)  # stays preserved unless memory runs short
        return victims, out_blocks

    def discard_pause(self, request: Request) -> None:
        """Discard a preserved pause's KV, GPU and host (InferCept's `pause_by_recompute`)."""
        request_id = request.request_id
        self._preserved.pop(request_id, None)
        self._stats["discarded"] += 1
        if self.kv_pauses.frontier(request_id) is None:
            self._stats["discarded_tokens"] += request.num_computed_tokens
            self.kv_pauses.discard(request)
            return
        self._stats["discarded_tokens"] += self.kv_pauses.pinned_head(request_id) * self.block_size
        if not self.kv_pauses.drop_swap(request_id):
            self.kv_pauses.give_up_head(request_id, self.kv_pauses.pinned_head(request_id))
        self._swap.forget(request_id)

    def _active_discard(self) -> None:
        """With no waiting request, the oldest swapped one recomputes instead (567-573)."""
        swapped = self._swap.swapped_queued
        if not swapped:
            return
        waiting = 0
        for queue in (self.waiting, self.kv_holding_waiting):
            waiting += len(queue) - queue.num_paused
        if waiting > len(swapped):
            return
        for request in sorted(swapped.values(), key=lambda r: r.arrival_time):
            if self.kv_pauses.drop_swap(request.request_id):
                del swapped[request.request_id]
                self._stats["active_discards"] += 1
                return

    # ----- vLLM's events ----------------------------------------------------------------------

    def on_pause(self, request: Request) -> None:
        hints, _ = parse_hints(
            request.sampling_params.extra_args if request.sampling_params else None,
            request.request_id, logger,
        )  # fmt: skip
        self._resume_at[request.request_id] = self._clock() + (hints.predicted_api_seconds or 0.0)
        self._preserved[request.request_id] = request
        self._stats["pauses"] += 1

    def on_resume(self, session: Request, update: StreamingUpdate) -> None:
        self._preserved.pop(session.request_id, None)
        self._resume_at.pop(session.request_id, None)
        self._swap.resumed(session)
        self.kv_pauses.resume(session)

    def on_scheduled(self, scheduler_output: SchedulerOutput) -> None:
        for admission in self.kv_pauses.admitted(scheduler_output):
            self._stats["prefix_hit_tokens"] += admission.restored_tokens
            self._stats["recomputed_tokens"] += admission.recomputed_tokens

    def on_freed(self, request: Request) -> None:
        self._preserved.pop(request.request_id, None)
        self._resume_at.pop(request.request_id, None)
        self._swap.forget(request.request_id)
        self.kv_pauses.forget(request.request_id)

    def is_preserved(self, request_id: str) -> bool:
        """Whether the request is a pause holding all its KV on the GPU."""
        request = self._preserved.get(request_id)
        return (
            request is not None
            and is_paused(request)
            and self.kv_pauses.frontier(request_id) is None
        )
