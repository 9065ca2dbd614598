"""LAMPS as its authors' code does it (`lamps.baselines.lamps_authors`), on vLLM's real scheduler.

Checks its distinctive rules: the strategy is classified at arrival and again at each resume
from predicted values; every preserved pause but the costliest is demoted to its class in one
iteration; only the waiting queue is ranked (the running list stays FCFS); starvation promotes
only requests that were scheduled once, for the quantum's length.
"""

from __future__ import annotations

import math
from typing import Any

from vllm.v1.request import RequestStatus

from lamps import Strategy
from lamps.baselines.infercept_model import GPTJ_6B, discard_waste
from lamps.baselines.lamps_authors import LampsAuthorsScheduler
from lamps.harness import make_request, run_step


def hints(out: int, api: float) -> dict[str, Any]:
    return {"lamps": {"predicted_output_tokens": out, "predicted_api_seconds": api}}


def request(request_id: str, prompt_len: int, out: int, api: float, **kwargs: Any) -> Any:
    prompt = [(hash(request_id) + i) % 500 + 3 for i in range(prompt_len)]
    return make_request(request_id, prompt, max_tokens=out, extra_args=hints(out, api), **kwargs)


def make(make_vllm_scheduler: Any, **config: Any) -> Any:
    kwargs = {"num_blocks": 200, "max_num_seqs": 8, "policy": "priority"}
    kwargs.update(config.pop("vllm", {}))
    return make_vllm_scheduler(
        LampsAuthorsScheduler, additional_config={"lamps_authors": config}, **kwargs
    )


def all_paused(sched: Any) -> bool:
    return all(r.status == RequestStatus.WAITING_FOR_STREAMING_REQ for r in sched.requests.values())


def test_classified_at_arrival_and_again_at_each_resume(make_vllm_scheduler: Any) -> None:
    sched = make(make_vllm_scheduler, vllm={"max_num_batched_tokens": 384})  # their setting
    assert sched.max_num_scheduled_tokens == 384
    # w_p = 30 s x ceil((100 + 20) / 64) * 64 = 3840 token-s, far above w_d: Discard.
    sched.add_request(request("s", 100, out=20, api=30.0, resumable=True))
    assert discard_waste(128, 0, 0, GPTJ_6B, 384) < 30.0 * 128
    assert sched.strategy_of("s") == Strategy.DISCARD
    while not all_paused(sched):
        run_step(sched)
    # The next call is predicted short: Preserve (classified from the original 100-token
    # prompt plus the new prediction, not from the context).
    resume = make_request("s", [5, 6], max_tokens=8, resumable=True, extra_args=hints(8, 1e-6))
    sched.add_request(resume)
    assert sched.strategy_of("s") == Strategy.PRESERVE
    assert sched.authors_stats()["classified_discard"] == 1
    assert sched.authors_stats()["classified_preserve"] == 1
    assert math.ceil((100 + 8) / 64) * 64 * 1e-6 <= discard_waste(128, 0, 0, GPTJ_6B, 384)


def test_every_preserved_pause_but_the_costliest_is_demoted_to_its_class(
    make_vllm_scheduler: Any,
) -> None:
    sched = make(make_vllm_scheduler)
    sched.add_request(request("small", 40, out=4, api=50.0, resumable=True))  # Discard class
    sched.add_request(request("large", 160, out=4, api=50.0, resumable=True))  # Discard, costlier
    sched.add_request(request("quick", 60, out=4, api=1e-6, resumable=True))  # Preserve class
    while not all_paused(sched):
        run_step(sched)
    assert sched.kv_pauses.num_released == 0  # all start preserved
    sched.schedule()
    assert sched.kv_pauses.frontier("small") == 43  # demoted: discarded
    assert sched.kv_pauses.frontier("large") is None  # the costliest: kept, the eviction victim
    assert sched.kv_pauses.frontier("quick") is None  # demoted to its class: Preserve
    assert sched.authors_stats()["demoted_discard"] == 1


def test_running_list_stays_fcfs_and_only_the_waiting_queue_is_ranked(
    make_vllm_scheduler: Any,
) -> None:
    sched = make(make_vllm_scheduler, vllm={"max_num_seqs": 2})
    sched.add_request(request("long", 300, out=30, api=0.0, arrival_time=1.0))
    sched.add_request(request("short", 10, out=30, api=0.0, arrival_time=2.0))
    run_step(sched)
    sched.add_request(request("later-long", 200, out=2, api=0.0, arrival_time=3.0))
    sched.add_request(request("later-short", 20, out=2, api=0.0, arrival_time=4.0))
    for _ in range(3):
        run_step(sched)
        # Running: by arrival, though "short" would score lower.
        assert [r.request_id for r in sched.running] == ["long", "short"]
        # Waiting: by score, smallest first, though "later-long" arrived first.
        assert [r.request_id for r in sched.waiting.queued()] == ["later-short", "later-long"]


def test_starvation_promotes_only_requests_scheduled_once(make_vllm_scheduler: Any) -> None:
    sched = make(
        make_vllm_scheduler,
        starvation_threshold=3,
        starvation_quantum=5,
        vllm={"num_blocks": 12},  # 11 usable blocks
    )
    sched.add_request(request("s", 40, out=4, api=100.0, resumable=True))
    while sched.requests["s"].status != RequestStatus.WAITING_FOR_STREAMING_REQ:
        run_step(sched)
    sched.add_request(request("hog", 120, out=60, api=0.0))  # 8 blocks, then more
    while sched.kv_pauses.frontier("s") is None:  # memory runs short: the victim is discarded
        run_step(sched)
    assert sched.authors_stats()["victim_discards"] == 1
    # The call returns with a bigger context than "fresh", which never ran: without
    # promotion "fresh" would rank first.
    returned = list(range(9, 29))
    sched.add_request(
        make_request("s", returned, max_tokens=4, resumable=True, extra_args=hints(4, 0.0))
    )
    sched.add_request(request("fresh", 40, out=4, api=0.0))
    order = []
    for _ in range(12):
        run_step(sched)
        order.append([r.request_id for r in sched.waiting.queued()])
    assert sched.requests["hog"].status == RequestStatus.RUNNING  # both kept waiting
    # "s" counts 3 iterations, gets its quantum at the 4th, spends it at the head for 5
    # iterations, then counts again; "fresh", never scheduled, is never promoted.
    promoted = [o == ["s", "fresh"] for o in order]
    assert order[0] == ["fresh", "s"]
    assert promoted == [False] * 4 + [True] * 5 + [False] * 3
    assert sched.authors_stats()["promotions"] == 2  # the second quantum starts next iteration
