"""InferCept as its code does it (`lamps.baselines.infercept`), on vLLM's real scheduler.

Each test checks one of its distinctive rules: all discard candidates but the costliest are
discarded in one iteration; pauses whose preserve waste is the lower stay; swaps happen only
under memory pressure, from the victim's tail, within the iteration's allowance, and the
victim comes back intact; running requests are swapped when no pause is a victim; the
allowances and waste are InferCept's formulas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_swap_connector import BLOCK_SIZE, SwapHarness, paused
from vllm.v1.request import RequestStatus

from lamps.baselines.infercept import InferCeptScheduler
from lamps.baselines.infercept_model import (
    GPTJ_6B,
    VICUNA_13B_TP2,
    allowance_blocks,
    discard_waste,
    swap_allowances,
)
from lamps.harness import SettableClock, make_request, run_step


def session(request_id: str, prompt_len: int, api_seconds: float, max_tokens: int = 4) -> Any:
    prompt = [(hash(request_id) + i) % 500 + 3 for i in range(prompt_len)]
    return make_request(
        request_id,
        prompt,
        max_tokens=max_tokens,
        resumable=True,
        extra_args={"lamps": {"predicted_api_seconds": api_seconds}},
    )


def test_waste_and_allowances_are_infercepts_formulas() -> None:
    # 6B constants (exps/6B_bench.sh): f_s = (0.0463*384 + 10)/1000 s, c_h = 384 - 100 = 284.
    c_h, n = 284, (1000 + 283) // 284 - 1
    f_s, f_ch = (0.0463 * 384 + 10) / 1000, 0.0463 * c_h / 1000
    want = f_s * (1 + n) * n / 2 * c_h + f_ch * n * 3200
    want += 0.0463 * (1000 % c_h) / 1000 * (3200 + 1000 % c_h)
    assert discard_waste(1000, 100, 3200, GPTJ_6B, 384) == pytest.approx(want)
    assert discard_waste(100, 500, 0, GPTJ_6B, 384) > 0  # c_h floors at 1 token
    t_sout, t_sin = swap_allowances(1600, GPTJ_6B, 384)
    assert t_sin == pytest.approx(0.00462 * 384 + 108.99 + 800)
    assert t_sout == pytest.approx(1.00462 * 384 + 108.99 - 800)
    assert allowance_blocks(t_sout, 16) == 0  # negative: nothing may be swapped out
    assert allowance_blocks(swap_allowances(0, VICUNA_13B_TP2, 384)[1], 16) == 0  # 13B: t_sin < 0


def test_runs_the_engines_token_budget_and_prices_waste_with_it(
    make_vllm_scheduler: Any,
) -> None:
    # Equal terms: InferCept's 384-token cap is an engine setting, not a hidden difference
    # from the other policies; its formulas use whatever budget the engine runs.
    sched = make_vllm_scheduler(InferCeptScheduler, policy="priority", max_num_batched_tokens=2048)
    assert sched.max_num_scheduled_tokens == 2048
    assert discard_waste(1000, 100, 3200, GPTJ_6B, 2048) < discard_waste(
        1000, 100, 3200, GPTJ_6B, 384
    )


def test_discards_every_candidate_but_the_costliest_in_one_iteration(
    make_vllm_scheduler: Any,
) -> None:
    sched = make_vllm_scheduler(
        InferCeptScheduler,
        policy="priority",
        num_blocks=200,
        max_num_seqs=8,
        max_num_batched_tokens=384,  # InferCept's mlimit, an engine setting
    )
    clock = SettableClock()
    sched.set_clock(clock)
    for rid, prompt in (("small", 40), ("mid", 80), ("large", 160)):
        sched.add_request(session(rid, prompt, api_seconds=100.0))
    sched.add_request(session("quick", 60, api_seconds=1e-6))  # w_p far below w_d
    requests = sched.requests
    while not all(r.status == RequestStatus.WAITING_FOR_STREAMING_REQ for r in requests.values()):
        run_step(sched)
    # The pauses started in the last step; the next iteration decides them all at once.
    assert sched.infercept_stats()["discarded"] == 0
    sched.schedule()
    stats = sched.infercept_stats()
    assert stats["pauses"] == 4 and stats["discarded"] == 2
    assert not sched.is_preserved("small") and not sched.is_preserved("mid")
    assert sched.kv_pauses.frontier("small") == 43 and sched.kv_pauses.frontier("mid") == 83
    assert sched.is_preserved("large")  # the costliest candidate: the eviction victim
    assert sched.is_preserved("quick")  # w_p <= w_d: never evicted by this rule
    # Later iterations keep them: one candidate left, and it is the costliest.
    for _ in range(3):
        sched.schedule()
    assert sched.infercept_stats()["discarded"] == 2
    assert sched.is_preserved("large") and sched.is_preserved("quick")


@pytest.fixture
def harness(tiny_llama_dir: Path) -> Any:
    made: list[SwapHarness] = []

    def make(**kwargs: Any) -> SwapHarness:
        h = SwapHarness(
            tiny_llama_dir, scheduler_cls=InferCeptScheduler, prefix_caching=True, **kwargs
        )
        h.clock = SettableClock()  # type: ignore[attr-defined]
        h.scheduler.set_clock(h.clock)
        made.append(h)
        return h

    yield make
    for h in made:
        h.worker.shutdown()


def api_session(h: SwapHarness, request_id: str, prompt_len: int, api: float, out: int) -> None:
    h.scheduler.add_request(session(request_id, prompt_len, api, max_tokens=out))


def plain(h: SwapHarness, request_id: str, prompt_len: int, out: int) -> None:
    prompt = [(hash(request_id) + i) % 500 + 3 for i in range(prompt_len)]
    h.scheduler.add_request(
        make_request(request_id, prompt, max_tokens=out, arrival_time=h.clock.now)
    )


def finished(h: SwapHarness, request_id: str) -> bool:
    return request_id not in h.scheduler.requests


def victim_swapped_by_a_runner(h: SwapHarness) -> list[int]:
    """A preserved pause (the only candidate: the victim) and a runner that fills the cache;
    returns the free blocks before each step until the victim's first eviction."""
    sched = h.scheduler
    api_session(h, "victim", 150, api=100.0, out=2)  # pauses holding 151 tokens: 10 blocks
    h.step_until(lambda: paused(h, "victim"))
    h.step()
    assert sched.is_preserved("victim")  # the only candidate: kept as the victim
    plain(h, "runner", 200, out=40)  # 13 blocks: fills the 23-block cache exactly
    free_before: list[int] = []
    pool = sched.kv_cache_manager.block_pool
    while sched.infercept_stats()["paused_swaps"] == 0:
        assert sched.is_preserved("victim"), "swapped before memory ran short"
        free_before.append(pool.get_num_free_blocks())
        h.step()
        assert len(free_before) < 30
    return free_before


def test_swaps_the_victims_tail_only_under_pressure_and_it_comes_back_intact(
    harness: Any,
) -> None:
    h = harness(num_blocks=24)  # 23 usable blocks
    sched = h.scheduler
    free_before = victim_swapped_by_a_runner(h)
    # The runner crossed into a 14th block with none free: one block, from the victim's tail.
    assert free_before[-1] == 0
    stats = sched.infercept_stats()
    allowance = allowance_blocks(
        swap_allowances(0, GPTJ_6B, sched.max_num_scheduled_tokens)[0], BLOCK_SIZE
    )
    assert stats["swapped_blocks"] == 1 <= allowance
    assert sched.kv_pauses.pinned_head("victim") == 9  # the rest of the head stays on the GPU
    assert h.connector.swapped_tokens("victim") == 151  # copied whole: the head may go later
    assert stats["discarded"] == 0 and stats["running_swaps"] == 0
    runner = sched.requests["runner"]
    h.step_until(lambda: finished(h, "runner"))
    assert runner.num_preemptions == 0 and runner.num_output_tokens == 40
    # Later growth took more of the same victim's head, block by block.
    assert sched.kv_pauses.pinned_head("victim") == 10 - sched.infercept_stats()["swapped_blocks"]
    # The call returns while another request waits: the victim is readmitted from what is
    # left of its pinned head plus its host copy, loaded within t_sin.
    h.clock.now = 100.0
    plain(h, "other", 30, out=2)
    h.resume("victim", [11, 12], max_tokens=2)
    h.step_until(lambda: paused(h, "victim"))  # the harness checked every token's KV
    assert sched.kv_pauses.num_pinned_blocks == 0
    stats = sched.infercept_stats()
    assert stats["active_discards"] == 0 and stats["recomputed_tokens"] == 0
    assert h.connector.swap_stats()["swap_ins"] == 1


def test_a_swapped_request_recomputes_when_nothing_else_waits(harness: Any) -> None:
    h = harness(num_blocks=24)
    sched = h.scheduler
    victim_swapped_by_a_runner(h)
    h.step_until(lambda: finished(h, "runner"))
    h.clock.now = 100.0
    h.resume("victim", [11, 12], max_tokens=2)  # alone in the queue (567-573)
    h.step_until(lambda: paused(h, "victim"))  # the harness checked the recomputed KV
    assert sched.infercept_stats()["active_discards"] == 1
    assert h.connector.swap_stats()["swap_ins"] == 0
    assert sched.kv_pauses.num_pinned_blocks == 0


def test_swaps_the_youngest_running_request_when_no_pause_is_a_victim(harness: Any) -> None:
    h = harness(num_blocks=20)  # 19 usable blocks
    sched = h.scheduler
    plain(h, "old", 158, out=40)  # 10 blocks; needs an 11th two decodes later
    h.step()
    h.clock.now = 1.0
    plain(h, "young", 130, out=40)  # 9 blocks: the cache is full
    h.step_until(lambda: sched.infercept_stats()["running_swaps"] > 0, limit=60)
    young, old = sched.requests["young"], sched.requests["old"]
    assert young.num_preemptions == 1 and old.num_preemptions == 0
    assert h.connector.swapped_tokens("young") > 0
    assert sched.kv_pauses.pinned_head("young") == 8  # only its last block gave way
    assert sched.infercept_stats()["running_recomputes"] == 0
    h.step_until(lambda: finished(h, "old") and finished(h, "young"), limit=400)
    assert young.num_output_tokens == 40 and old.num_output_tokens == 40
    assert sched.kv_pauses.num_pinned_blocks == 0


def test_long_overdue_or_short_calls_are_never_discarded_by_the_rule(
    make_vllm_scheduler: Any,
) -> None:
    sched = make_vllm_scheduler(InferCeptScheduler, policy="priority", num_blocks=200)
    clock = SettableClock()
    sched.set_clock(clock)
    sched.add_request(session("a", 100, api_seconds=1.0))
    sched.add_request(session("b", 120, api_seconds=1.0))
    requests = sched.requests
    while not all(r.status == RequestStatus.WAITING_FOR_STREAMING_REQ for r in requests.values()):
        run_step(sched)
    clock.now = 5.0  # both calls overdue: remaining time negative, w_p < 0 <= w_d
    sched.schedule()
    assert sched.infercept_stats()["discarded"] == 0
    assert sched.is_preserved("a") and sched.is_preserved("b")


def test_a_model_infercept_never_profiled_takes_the_cost_models_iteration_constants() -> None:
    from lamps.baselines.infercept import constants_from_config

    k = constants_from_config({"profile": "llama31-8b-h100"})
    assert (k.f_a_ms, k.f_c_ms) == (0.0207, 8.66)
    assert (k.swap_a, k.swap_b) == (GPTJ_6B.swap_a, GPTJ_6B.swap_b)
    with pytest.raises(ValueError, match="unknown cost-model profile 'nope'"):
        constants_from_config({"profile": "nope"})
