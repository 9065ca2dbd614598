"""vLLM's CPU KV offloading (`vllm-offload`) on vLLM's real scheduler and connector, GPU mocked.

Checks: the connector config is the one vLLM builds for `--kv-offloading-size`; the simulated
worker starts a step's stores at the next step and reports them after the link time; a turn
whose blocks were evicted from the GPU prefix cache loads them from host memory, waits for the
load's link time, and is counted; a short stateless replay of `builtin:agent` under memory
pressure finishes every request, recomputing less than stock vLLM.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from vllm.config import CacheConfig, DeviceConfig, VllmConfig
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from lamps.baselines.vllm_offload import offloading_transfer_config
from lamps.harness import make_request, model_config, model_runner_output, sampling_requests
from lamps.replay.agent_policies import VllmOffloadPolicy
from lamps.replay.engine import SimEngine
from lamps.replay.offload_worker import SimulatedOffloadWorker
from lamps.replay.policies import make_policy
from lamps.replay.profiles import GIB, get_profile
from lamps.workloads import Arrival, load_trace

MODEL = get_profile("gptj-6b-a100").engine_model()
BLOCK = 16


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 31 + i * 7) % 500 + 3 for i in range(n)]


@pytest.fixture
def offload(make_vllm_scheduler: Any) -> tuple[Scheduler, SimulatedOffloadWorker, Clock]:
    # 16 blocks, the null block among them: 15 hold requests.
    sched = make_vllm_scheduler(
        Scheduler, num_blocks=16, kv_transfer_config=offloading_transfer_config(1.0)
    )
    clock = Clock()
    return sched, SimulatedOffloadWorker(clock, MODEL, BLOCK), clock


def step(sched: Scheduler, worker: SimulatedOffloadWorker, clock: Clock, dt: float) -> Any:
    """One engine step: schedule, the worker at the step's start, then `dt` of compute."""
    out = sched.schedule()
    kv_output = worker.step(out)
    clock.now += dt
    runner = model_runner_output(out, sampling_requests(sched, out), kv_connector_output=kv_output)
    sched.update_from_output(out, runner)
    return out


def run_until_finished(sched: Scheduler, worker: Any, clock: Clock, request_id: str) -> None:
    for _ in range(50):
        if request_id not in sched.requests:
            return
        step(sched, worker, clock, 0.01)
    raise AssertionError(f"{request_id} did not finish")


def test_transfer_config_is_the_one_vllm_builds_for_kv_offloading_size(
    tiny_llama_dir: Any,
) -> None:
    vllm_built = VllmConfig(
        model_config=model_config(tiny_llama_dir),
        cache_config=CacheConfig(block_size=BLOCK, kv_offloading_size=2.5),
        device_config=DeviceConfig("cpu"),
    ).kv_transfer_config
    ours = offloading_transfer_config(2.5)
    assert vllm_built is not None
    for field in ("kv_connector", "kv_role", "kv_connector_extra_config"):
        assert getattr(ours, field) == getattr(vllm_built, field), field
    assert ours.kv_connector_extra_config == {"cpu_bytes_to_use": 2.5 * GIB}
    with pytest.raises(ValueError, match="must be > 0 GiB"):
        offloading_transfer_config(0)


def test_host_memory_is_the_profiles_unless_the_policy_says_otherwise() -> None:
    profile = get_profile("llama31-8b-h100")
    default = VllmOffloadPolicy().kv_transfer_config(profile)
    assert default.kv_connector_extra_config["cpu_bytes_to_use"] == profile.host_memory_bytes
    small = VllmOffloadPolicy(host_gib=4).kv_transfer_config(profile)
    assert small.kv_connector_extra_config["cpu_bytes_to_use"] == 4 * GIB
    with pytest.raises(ValueError, match="vllm-offload: host memory"):
        VllmOffloadPolicy(host_gib=-1)


def test_stores_start_with_the_next_step_and_end_after_the_link_time(offload: Any) -> None:
    sched, worker, clock = offload
    sched.add_request(make_request("a", prompt(1, 5 * BLOCK), max_tokens=3))
    out = step(sched, worker, clock, 0.5)  # the prefill: its 5 blocks are to be stored
    assert len(out.kv_connector_metadata.store_jobs) == 1
    assert worker.blocks_started["out"] == 0  # deferred to the next step (prepare_store_kv)
    step(sched, worker, clock, 0.5)
    assert worker.blocks_started["out"] == 5
    assert worker.busy_until() == pytest.approx(0.5 + MODEL.swap_seconds(5 * BLOCK))
    run_until_finished(sched, worker, clock, "a")
    stats = worker.stats()
    assert stats["offload_stores"] == 1 and stats["offload_stored_tokens"] == 5 * BLOCK
    assert stats["offload_stored_bytes"] == 5 * BLOCK * MODEL.kv_bytes_per_token


def test_an_evicted_turn_reloads_from_host_after_the_link_time(offload: Any) -> None:
    sched, worker, clock = offload
    first = prompt(1, 5 * BLOCK)
    sched.add_request(make_request("a", first, max_tokens=2))
    run_until_finished(sched, worker, clock, "a")
    step(sched, worker, clock, 0.01)  # the store ends and is reported
    assert worker.stats()["offload_stores"] == 1
    # Another request takes every GPU block: a's blocks leave the GPU prefix cache.
    sched.add_request(make_request("b", prompt(2, 15 * BLOCK), max_tokens=1))
    run_until_finished(sched, worker, clock, "b")
    # a's next turn: its prefix is on the host only.
    turn = make_request("a.1", [*first, *prompt(3, 20)], max_tokens=2)
    sched.add_request(turn)
    start = clock.now
    out = step(sched, worker, clock, 0.0)  # nothing computes while the load runs
    assert "a.1" not in out.num_scheduled_tokens
    (load,) = out.kv_connector_metadata.load_jobs.values()
    assert load.req_id == "a.1"
    assert turn.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    load_end = start + MODEL.swap_seconds(5 * BLOCK)
    assert worker.next_end() == pytest.approx(load_end)
    clock.now = load_end - 1e-6
    out = step(sched, worker, clock, 0.0)
    assert "a.1" not in out.num_scheduled_tokens  # not before the link time
    clock.now = load_end
    step(sched, worker, clock, 0.0)  # the worker reports the load (finished_recving)
    out = step(sched, worker, clock, 0.01)
    assert out.num_scheduled_tokens["a.1"] == 20  # the 80 loaded tokens are not recomputed
    run_until_finished(sched, worker, clock, "a.1")
    stats = worker.stats()
    assert stats["offload_loads"] == 1 and stats["offload_loaded_tokens"] == 5 * BLOCK
    assert stats["offload_loaded_bytes"] == 5 * BLOCK * MODEL.kv_bytes_per_token
    assert not sched.requests


def test_replay_of_agents_with_offloading_finishes_everything_and_recomputes_less() -> None:
    base = get_profile("llama31-8b-h100")
    # Room for 20,000 tokens of KV: the agents' turns evict each other's prefixes.
    profile = dataclasses.replace(
        base, name="llama31-8b-small", memory_bytes=base.weight_bytes + 20_000 * 131_072
    )
    workload = load_trace("builtin:agent")
    arrivals = [Arrival(i, 0.5 * i, workload.requests[i]) for i in range(12)]
    scheduled = {}
    for name in ("vllm", "vllm-offload"):
        policy = make_policy(name, cost_config=profile.scheduler_cost_config())
        engine = SimEngine(profile, policy, arrivals)
        result = engine.run()
        for rec in result.records:
            assert rec.finished, rec.arrival.request_id
            assert rec.output_tokens == rec.arrival.request.output_tokens
        assert not engine.scheduler.requests
        assert engine.scheduler.kv_cache_manager.usage == 0.0
        scheduled[name] = sum(rec.scheduled_tokens for rec in result.records)
        if name == "vllm-offload":
            stats = result.policy_stats
            assert stats["offload_loaded_tokens"] > 0 and stats["offload_loads"] > 0
            moved = stats["offload_stored_bytes"] + stats["offload_loaded_bytes"]
            assert stats["swapped_bytes"] >= moved > 0
    assert scheduled["vllm-offload"] < scheduled["vllm"]
