"""One scheduler step (schedule() + update_from_output()): LampsScheduler vs vLLM's AsyncScheduler.

256 requests decode while 1,000, 10,000 or 100,000 wait (the waiting ones cannot be admitted:
the batch is full, as under overload). Both schedulers run in the same session on the same
inputs. Run: pytest benchmarks/bench_scheduler_step.py --benchmark-only
Compare the two rows of each `waiting=N` group (targets: lamps <= 1.05x vllm at 1,000 and
10,000 waiting, <= 1.2x at 100,000). The `shortage hook` group measures what watching every
allocation for a KV shortage would cost: LAMPS against the same class with the watch on in
every step (LAMPS puts it on only in steps where it may free blocks, none here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamps.harness import (
    build_scheduler,
    build_vllm_config,
    make_request,
    model_runner_output,
    write_tiny_llama,
)

RUNNING = 256
PROMPT = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("bench-llama"))


def loaded_scheduler(cls: type, model_dir: Path, waiting: int) -> Any:
    config = build_vllm_config(
        model_dir,
        max_num_seqs=RUNNING,
        max_num_batched_tokens=RUNNING * PROMPT,
        max_model_len=2048,
        num_blocks=RUNNING * 40 + waiting * 4,
        async_scheduling=True,
        additional_config={"lamps": {"log_interval_s": 0.0}},
    )
    sched = build_scheduler(config, scheduler_cls=cls)
    for i in range(RUNNING):
        sched.add_request(
            make_request(f"run{i}", [(i * 31 + j) % 500 for j in range(PROMPT)], max_tokens=1500)
        )
    step(sched)  # admit and prefill the running batch
    assert len(sched.running) == RUNNING
    for i in range(waiting):
        prompt = [(i * 17 + j) % 500 for j in range(PROMPT + i % 200)]
        sched.add_request(make_request(f"wait{i}", prompt, max_tokens=1 + i % 300))
    return sched


def step(sched: Any) -> None:
    out = sched.schedule()
    sched.update_from_output(out, model_runner_output(out, out.num_scheduled_tokens))


def time_against(benchmark: Any, sched: Any, other: Any, group: str) -> None:
    """Time `sched`'s steps; `other` steps (untimed) before every timed round, so both rows of
    a group do the same work in the same order and share whatever load the machine has."""
    benchmark.group = group
    benchmark.pedantic(
        step,
        args=(sched,),
        setup=lambda: step(other),
        rounds=300,
        iterations=1,
        warmup_rounds=20,
    )
    assert len(sched.running) == RUNNING


@pytest.mark.parametrize("waiting", [1000, 10000, 100000])
@pytest.mark.parametrize("impl", ["vllm", "lamps"])
def test_scheduler_step(benchmark: Any, model_dir: Path, impl: str, waiting: int) -> None:
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    from lamps.vllm import LampsScheduler

    classes = {"lamps": LampsScheduler, "vllm": AsyncScheduler}
    sched = loaded_scheduler(classes[impl], model_dir, waiting)
    other = loaded_scheduler(classes["vllm" if impl == "lamps" else "lamps"], model_dir, waiting)
    time_against(benchmark, sched, other, f"waiting={waiting}")


@pytest.mark.parametrize("impl", ["watched", "lamps"])
def test_shortage_hook(benchmark: Any, model_dir: Path, impl: str) -> None:
    from lamps.vllm import LampsScheduler

    class WatchedLampsScheduler(LampsScheduler):
        def may_free_kv_on_shortage(self) -> bool:
            return True  # every allocation goes through the shortage hook's wrapper

    classes = {"lamps": LampsScheduler, "watched": WatchedLampsScheduler}
    sched = loaded_scheduler(classes[impl], model_dir, 1000)
    other = loaded_scheduler(classes["watched" if impl == "lamps" else "lamps"], model_dir, 1000)
    time_against(benchmark, sched, other, "shortage hook, waiting=1000")
