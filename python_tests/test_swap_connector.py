"""LampsSwapConnector driven by vLLM's real scheduler (LampsSyncScheduler) on CPU.

The model runner is played by `SwapHarness.step`: it writes each scheduled token's KV into its
block (a value derived from the token and its position), checks that every token computed in
an earlier step still has its value, and wraps that fake forward in vLLM's own connector driver
of its model runner (`KVConnectorModelRunnerMixin` up to vLLM 0.33; vLLM 0.34 removed that
runner, and its remaining one drives connectors with `ActiveKVConnector`) with the worker-role
connector installed as the KV transfer group, so the worker side runs exactly as in a vLLM
model runner. Blocks nobody holds are overwritten
after every step, so a swap-in that did not restore the data is caught.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from vllm.distributed.kv_transfer import kv_transfer_state
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.forward_context import set_forward_context
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.outputs import KVConnectorOutput
from vllm.v1.request import RequestStatus
from vllm.v1.worker.utils import allocate_kv_cache

from lamps.connector import LampsSwapConnector, LampsSwapMetadata, SwapConfig, host_pool_blocks
from lamps.harness import (
    attention_spec,
    build_scheduler,
    build_vllm_config,
    layered_kv_cache_config,
    make_request,
    model_runner_output,
    sampling_requests,
    swap_connector_config,
)
from lamps.mechanism.compat import VLLM_VERSION
from lamps.swap import SwapEngine, SwapError
from lamps.vllm import LampsSyncScheduler

BLOCK_SIZE = 16
NUM_LAYERS = 2
NUM_KV_HEADS = 2
HEAD_SIZE = 64
# Swap is nearly free, recompute and preserve are expensive: LAMPS chooses Swap at every pause.
SWAP_FAVOURING_COST = {
    "a_ms_per_token": 5.0,
    "c_ms": 10.0,
    "kv_bytes_per_token": 1.0,
    "link_bytes_per_second": 1e15,
}
HINTS = {"lamps": {"predicted_api_seconds": 30.0, "predicted_output_tokens": 4}}


class SwapHarness:
    """A LampsSyncScheduler with the swap connector, plus a fake model runner on CPU tensors."""

    def __init__(
        self,
        model_dir: Path,
        *,
        num_blocks: int = 64,
        host_pool_blocks_wanted: int = 64,
        budget: int = 0,
        prefix_caching: bool = False,
        scheduler_cls: type[Scheduler] = LampsSyncScheduler,
    ) -> None:
        spec = attention_spec(block_size=BLOCK_SIZE, num_kv_heads=NUM_KV_HEADS, head_size=HEAD_SIZE)
        self.kv_cache_config = layered_kv_cache_config(
            spec, num_blocks, NUM_LAYERS, KVCacheLayout.LBHNC
        )
        host_gib = host_pool_blocks_wanted * spec.page_size_bytes * NUM_LAYERS / (1 << 30)
        self.vllm_config = build_vllm_config(
            model_dir,
            max_model_len=1024,
            num_blocks=num_blocks,
            block_size=BLOCK_SIZE,
            enable_prefix_caching=prefix_caching,
            kv_transfer_config=swap_connector_config(
                host_pool_gib=host_gib, swap_budget_tokens_per_step=budget, backend="cpu"
            ),
            additional_config={"lamps": {"cost_model": SWAP_FAVOURING_COST}},
        )
        self.scheduler = build_scheduler(
            self.vllm_config, self.kv_cache_config, scheduler_cls=scheduler_cls
        )
        self.connector = self.scheduler.connector
        assert isinstance(self.connector, LampsSwapConnector)
        self.worker = LampsSwapConnector(
            self.vllm_config, KVConnectorRole.WORKER, self.kv_cache_config
        )
        self.kv_caches = allocate_kv_cache(
            self.kv_cache_config, torch.device("cpu"), KVCacheLayout.LBHNC
        )
        self._driver: Any = None  # vLLM 0.34: the runner's ActiveKVConnector
        if VLLM_VERSION[:2] <= (0, 33):
            self.worker.register_kv_caches(self.kv_caches)
        else:
            from vllm.v1.worker.gpu.kv_connector import ActiveKVConnector

            with mock.patch.object(kv_transfer_state, "_KV_CONNECTOR_AGENT", self.worker):
                # It registers the KV caches with the worker-role connector, as the runner does.
                self._driver = ActiveKVConnector(self.vllm_config, self.kv_caches)
        self.metas: list[LampsSwapMetadata] = []
        self.loaded_tokens: dict[str, int] = {}

    @staticmethod
    def kv_value(token_id: int, position: int, layer: int) -> float:
        return float(token_id * 4096 + position * 2 + layer + 1)

    def _check_and_write(self, request_id: str, num_new: int) -> None:
        request = self.scheduler.requests[request_id]
        block_ids = self.scheduler.kv_cache_manager.get_block_ids(request_id)[0]
        end = request.num_computed_tokens  # advanced by schedule() already
        tokens = request.all_token_ids
        for position in range(end):
            block, slot = block_ids[position // BLOCK_SIZE], position % BLOCK_SIZE
            for layer, cache in enumerate(self.kv_caches.values()):
                want = self.kv_value(tokens[position], position, layer)
                if position < end - num_new:
                    got = cache[block, :, slot, :]
                    assert torch.all(got == want), (
                        f"{request_id}: KV of token {position} (block {block}) lost"
                    )
                else:
                    cache[block, :, slot, :] = want

    def _scribble_free_blocks(self) -> None:
        """Overwrite every free block the prefix cache cannot hand back, as reuse would."""
        for block in self.scheduler.kv_cache_manager.block_pool.blocks:
            if block.ref_cnt == 0 and block.block_hash is None and not block.is_null:
                for cache in self.kv_caches.values():
                    cache[block.block_id].fill_(-1.0)

    def step(self) -> Any:
        """One engine step: schedule, fake forward inside vLLM's connector mixin, update."""
        out = self.scheduler.schedule()
        meta = out.kv_connector_metadata
        assert isinstance(meta, LampsSwapMetadata)
        self.metas.append(meta)
        for job in meta.swap_in:
            self.loaded_tokens[job.request_id] = len(job.block_ids)

        def forward() -> None:
            for request_id, n in out.num_scheduled_tokens.items():
                self._check_and_write(request_id, n)

        with (
            mock.patch.object(kv_transfer_state, "_KV_CONNECTOR_AGENT", self.worker),
            set_forward_context(None, self.vllm_config),
        ):
            kv_output = self._forward_with_connector(out, forward)
        sampling = sampling_requests(self.scheduler, out)
        runner_output = model_runner_output(out, sampling, 9, kv_connector_output=kv_output)
        self.scheduler.update_from_output(out, runner_output)
        self._scribble_free_blocks()
        return out

    def _forward_with_connector(
        self, out: Any, forward: Callable[[], None]
    ) -> KVConnectorOutput | None:
        """Run `forward` inside the model runner's connector calls; the step's connector output."""
        if self._driver is None:
            from vllm.v1.worker.kv_connector_model_runner_mixin import (
                KVConnectorModelRunnerMixin,
            )

            with KVConnectorModelRunnerMixin.maybe_get_kv_connector_output(out) as kv_output:
                assert kv_output is not None  # the mixin found the worker-role connector
                forward()
            return kv_output
        self._driver.pre_forward(out)
        forward()
        self._driver.finish_forward()
        kv_output = self._driver.post_forward(out.finished_req_ids)
        assert kv_output is not None  # the driver is active
        return kv_output

    def step_until(self, condition: Any, limit: int = 200) -> None:
        for _ in range(limit):
            if condition():
                return
            self.step()
            # The CPU engine copies on its own threads: give them a moment between steps.
            time.sleep(0.002)
        raise AssertionError("condition not reached")

    @property
    def engine(self) -> SwapEngine:
        """The worker's swap engine."""
        engine = self.worker.worker_side.engine
        assert engine is not None
        return engine

    def host_pool_drained(self) -> bool:
        """Whether the worker's host pool has every block back."""
        return self.engine.num_free_host_blocks == self.connector.num_host_blocks

    def status(self, request_id: str) -> RequestStatus | None:
        request = self.scheduler.requests.get(request_id)
        return None if request is None else request.status

    def resume(self, request_id: str, new_tokens: list[int], max_tokens: int = 3) -> None:
        self.scheduler.add_request(
            make_request(
                request_id, new_tokens, max_tokens=max_tokens, resumable=True, extra_args=HINTS
            )
        )


def start_session(h: SwapHarness, request_id: str, prompt_len: int, max_tokens: int = 4) -> None:
    prompt = [(hash(request_id) + i) % 500 + 3 for i in range(prompt_len)]
    h.scheduler.add_request(
        make_request(request_id, prompt, max_tokens=max_tokens, resumable=True, extra_args=HINTS)
    )


def paused(h: SwapHarness, request_id: str) -> bool:
    return h.status(request_id) == RequestStatus.WAITING_FOR_STREAMING_REQ


@pytest.fixture
def harness(tiny_llama_dir: Path) -> Any:
    made: list[SwapHarness] = []

    def make(**kwargs: Any) -> SwapHarness:
        made.append(SwapHarness(tiny_llama_dir, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.worker.shutdown()


def test_swap_out_at_pause_and_load_at_resume_keep_the_kv(harness: Any) -> None:
    h = harness()
    free_at_start = h.scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    start_session(h, "s", prompt_len=70)
    h.step_until(lambda: paused(h, "s"))
    assert h.scheduler.lamps_stats.swapped == 1
    assert h.scheduler.lamps_stats.swapped_bytes == (70 + 4 - 1) * SWAP_FAVOURING_COST[
        "kv_bytes_per_token"]  # fmt: skip
    # The scheduler freed the request's blocks at once; the connector holds them until copied.
    assert h.connector.swap_state("s") in ("queued", "saving", "saved")
    swapped = h.connector.swapped_tokens("s")
    assert swapped == 70 + 4 - 1
    h.step_until(lambda: h.connector.swap_state("s") == "saved")
    stats = h.connector.swap_stats()
    assert (stats["saved_out"], stats["failed_out"]) == (1, 0)  # one swap-out ended, well
    assert h.scheduler.kv_cache_manager.block_pool.get_num_free_blocks() == free_at_start
    assert h.connector.num_free_host_blocks == h.connector.num_host_blocks - 5
    # Freed blocks were overwritten meanwhile; the API result arrives and the session resumes.
    h.step()
    h.resume("s", [11, 12, 13])
    out = h.step()
    assert "s" not in out.num_scheduled_tokens  # loading, not running
    assert h.status("s") == RequestStatus.WAITING_FOR_REMOTE_KVS
    h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    assert h.loaded_tokens["s"] == 5  # every block came back from the host
    # The load is checked by the harness: the next forward sees all 73 old tokens intact.
    h.step_until(lambda: paused(h, "s"))
    assert h.scheduler.lamps_stats.recomputed_tokens == 0
    assert h.connector.swap_stats()["swap_ins"] == 1
    h.scheduler.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    h.step_until(lambda: h.connector.swap_state("s") is None and "s" not in h.scheduler.requests)
    h.step_until(lambda: h.connector.num_free_host_blocks == h.connector.num_host_blocks)
    h.step_until(h.host_pool_drained)


def test_once_preempted_session_admitted_as_resumed_after_swap_in_forgets_its_frontier(
    harness: Any,
) -> None:
    """Regression: vLLM admits a once-preempted request as *resumed* after its swap-in.

    Its discard/swap frontier must still be cleared at that admission; a stale one made the
    next resume of a preserved pause rewind a live request (a vLLM assertion in the replay).
    """
    h = harness()
    start_session(h, "s", prompt_len=70)
    h.step_until(lambda: paused(h, "s"))
    h.step_until(lambda: h.connector.swap_state("s") == "saved")
    h.scheduler.requests["s"].num_preemptions = 1  # it was preempted earlier in its life
    h.resume("s", [11, 12, 13])
    h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    state = h.scheduler.lamps_state("s")
    assert state is not None and state.frontier is None
    assert h.scheduler.lamps_stats.prefix_hit_tokens == 70 + 4 - 1
    assert h.scheduler.lamps_stats.recomputed_tokens == 0


def test_prefix_cache_hit_loads_only_the_tail(harness: Any) -> None:
    h = harness(prefix_caching=True)
    start_session(h, "s", prompt_len=70)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    h.resume("s", [11, 12, 13])
    h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    # 73 computed tokens: 4 full blocks still cached on the device, the partial 5th from host.
    assert h.loaded_tokens["s"] == 1
    assert h.scheduler.lamps_stats.prefix_hit_tokens == 73
    h.step_until(lambda: paused(h, "s"))


def test_many_sessions_swap_concurrently_within_the_budget(harness: Any) -> None:
    h = harness(num_blocks=128, host_pool_blocks_wanted=128, budget=100)
    ids = [f"s{i}" for i in range(6)]
    for rid in ids:
        start_session(h, rid, prompt_len=40 + 8 * ids.index(rid))
    h.step_until(lambda: all(paused(h, rid) for rid in ids))
    h.step_until(lambda: all(h.connector.swap_state(rid) == "saved" for rid in ids))
    tokens_out = [
        sum(h.connector.swapped_tokens(j.request_id) for j in m.swap_out) for m in h.metas
    ]
    assert sum(1 for t in tokens_out if t) >= 2  # the budget spread the copies over steps
    # A step exceeds the budget only when a single request is larger than it.
    assert all(t <= 100 or len(m.swap_out) == 1 for t, m in zip(tokens_out, h.metas, strict=True))
    for rid in ids:
        h.resume(rid, [21, 22])
    h.step_until(
        lambda: (
            all(paused(h, rid) for rid in ids)
            and not any(h.connector.swap_state(rid) == "loading" for rid in ids)
        )
    )
    assert h.connector.swap_stats()["swap_ins"] == 6
    assert all(h.scheduler.lamps_stats.as_dict()[k] == 12 for k in ("pauses", "swapped"))


def test_full_host_pool_falls_back_to_discard_and_loses_nothing(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(host_pool_blocks_wanted=6)
    assert h.connector.num_host_blocks == 6
    start_session(h, "big", prompt_len=100)  # 7 blocks: never fits
    h.step_until(lambda: paused(h, "big"))
    assert h.scheduler.lamps_stats.swap_fallbacks == 1
    assert h.connector.swap_state("big") is None
    assert h.connector.swap_stats()["rejected_pool_full"] == 1
    assert "host pool full" in caplog.text
    h.resume("big", [5, 6])
    h.step_until(lambda: paused(h, "big"))  # recomputed from scratch, checked by the harness
    assert h.scheduler.lamps_stats.recomputed_tokens == 103


def test_request_finished_while_saving_frees_blocks_after_the_copy(harness: Any) -> None:
    h = harness()
    pool = h.scheduler.kv_cache_manager.block_pool
    free_at_start = pool.get_num_free_blocks()
    h.engine.set_paused(True)  # hold the copier: the copy stays in flight
    start_session(h, "s", prompt_len=40)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saving")
    h.scheduler.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    for _ in range(3):
        h.step()
    assert pool.get_num_free_blocks() == free_at_start - 3  # still read by the copy
    h.engine.set_paused(False)
    h.step_until(lambda: pool.get_num_free_blocks() == free_at_start)
    h.step_until(h.host_pool_drained)
    assert h.connector.swap_state("s") is None
    stats = h.connector.swap_stats()
    assert (stats["saved_out"], stats["failed_out"]) == (0, 0)  # no outcome for an aborted copy


def test_request_aborted_while_loading_is_freed(harness: Any) -> None:
    h = harness()
    pool = h.scheduler.kv_cache_manager.block_pool
    free_at_start = pool.get_num_free_blocks()
    start_session(h, "s", prompt_len=40)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    h.engine.set_paused(True)
    h.resume("s", [1, 2])
    h.step_until(lambda: h.status("s") == RequestStatus.WAITING_FOR_REMOTE_KVS)
    h.scheduler.finish_requests("s", RequestStatus.FINISHED_ABORTED)
    h.step()
    h.engine.set_paused(False)
    h.step_until(lambda: "s" not in h.scheduler.requests)
    assert pool.get_num_free_blocks() == free_at_start
    h.step_until(h.host_pool_drained)


def test_failed_swap_in_recomputes(harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    start_session(h, "s", prompt_len=40)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    # The worker lost its copy (e.g. a restarted worker): the load must fail, not corrupt.
    h.engine.release("s")
    h.resume("s", [1, 2])
    h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    assert "swap-in of s not started" in caplog.text
    assert h.connector.swap_stats()["failed_in"] == 1
    h.step_until(lambda: paused(h, "s"))  # the harness checked the recomputed KV


def test_double_swap_out_and_bad_config_raise(harness: Any, tiny_llama_dir: Path) -> None:
    h = harness()
    start_session(h, "s", prompt_len=40)
    h.step_until(lambda: paused(h, "s"))
    request = h.scheduler.requests["s"]
    with pytest.raises(ValueError, match="already has a swap"):
        h.connector.request_swap_out(request)
    with pytest.raises(ValueError, match="host_pool_gib"):
        SwapConfig.from_extra_config({"host_pool_gib": -1})
    with pytest.raises(ValueError, match="swap_budget_tokens_per_step"):
        SwapConfig.from_extra_config({"swap_budget_tokens_per_step": 1.5})
    with pytest.raises(ValueError, match="unknown key"):
        SwapConfig.from_extra_config({"host_pool_gb": 1})
    assert host_pool_blocks(h.kv_cache_config, 1.0) == (1 << 30) // (
        NUM_LAYERS * h.kv_cache_config.kv_cache_groups[0].kv_cache_spec.page_size_bytes
    )


def test_failed_load_gives_the_workers_host_copy_back(harness: Any) -> None:
    """A load that fails leaves the worker's copy in place: the scheduler side releases it."""
    h = harness()
    start_session(h, "s", prompt_len=40)
    h.step_until(lambda: paused(h, "s") and h.connector.swap_state("s") == "saved")
    with mock.patch.object(h.engine, "swap_in", side_effect=SwapError("injected")):
        h.resume("s", [1, 2], max_tokens=8)
        h.step_until(lambda: h.status("s") == RequestStatus.RUNNING)
    assert h.connector.swap_stats()["failed_in"] == 1
    h.step()
    assert h.status("s") == RequestStatus.RUNNING
    assert h.host_pool_drained()  # the copy the failed load did not consume was released
    h.step_until(lambda: paused(h, "s"))  # the harness checked the recomputed KV
    h.step_until(lambda: h.connector.swap_state("s") == "saved")
    assert h.connector.swap_stats()["failed_out"] == 0  # the next swap-out found no stale copy


def _drained(h: SwapHarness, ids: list[str]) -> bool:
    side = h.connector.scheduler_side
    return (
        not side.records
        and not any(rid in h.scheduler.requests for rid in ids)
        and h.engine.num_in_flight == 0
        and h.host_pool_drained()
    )


def test_many_pause_resume_abort_cycles_leave_no_state(harness: Any) -> None:
    """Every way out of a swap removes its record; queues, pools and workers end empty."""
    h = harness(num_blocks=160, host_pool_blocks_wanted=40, budget=64)
    side = h.connector.scheduler_side
    pool = h.scheduler.kv_cache_manager.block_pool
    free_at_start = pool.get_num_free_blocks()
    real_swap_out = h.engine.swap_out

    def swap_out(request_id: str, block_ids: list[int], stream: int | None = None) -> None:
        if request_id.endswith("-fail"):
            raise SwapError("injected")
        real_swap_out(request_id, block_ids, stream)

    cycles = 4
    everyone: list[str] = []
    with mock.patch.object(h.engine, "swap_out", side_effect=swap_out):
        for cycle in range(cycles):
            ids = [f"c{cycle}-{i}" for i in range(6)]
            big, fail = f"c{cycle}-big", f"c{cycle}-fail"
            others = [big, fail]
            everyone += [*ids, *others]
            h.engine.set_paused(True)  # copies stay in flight until released below
            for rid in ids:
                start_session(h, rid, prompt_len=40 + 5 * cycle)
            start_session(h, big, prompt_len=700)  # 44 blocks: the host pool is full for it
            start_session(h, fail, prompt_len=40)  # its swap-outs fail: Discard
            h.step_until(lambda a=[*ids, *others]: all(paused(h, r) for r in a))
            assert h.connector.swap_state(big) is None
            # The budget sends one copy per step: one saving, the rest queued.
            h.step_until(lambda ids=ids: any(h.connector.swap_state(r) == "saving" for r in ids))
            states = {rid: h.connector.swap_state(rid) for rid in ids}
            saving = [rid for rid, state in states.items() if state == "saving"]
            queued = [rid for rid, state in states.items() if state == "queued"]
            assert saving and queued, states
            h.scheduler.finish_requests([saving[0], queued[0]], RequestStatus.FINISHED_ABORTED)
            live = [rid for rid in ids if rid not in (saving[0], queued[0])]
            h.engine.set_paused(False)
            h.step_until(
                lambda live=live, n=2 * cycle + 1: (
                    all(h.connector.swap_state(r) == "saved" for r in live)
                    and h.connector.swap_stats()["failed_out"] == n
                )
            )
            assert h.connector.swap_state(fail) is None
            aborted_saved, failed, loading, resumed = live
            h.scheduler.finish_requests(aborted_saved, RequestStatus.FINISHED_ABORTED)
            h.engine.release(failed)  # the worker lost this copy: its load fails
            h.engine.set_paused(True)
            for rid in (failed, loading, resumed, fail):
                h.resume(rid, [7, 8])
            h.step_until(lambda rid=loading: h.connector.swap_state(rid) == "loading")
            h.scheduler.finish_requests(loading, RequestStatus.FINISHED_ABORTED)
            h.step()
            h.engine.set_paused(False)
            h.step_until(
                lambda a=(failed, resumed, fail), n=2 * cycle + 2: (
                    all(paused(h, r) for r in a) and h.connector.swap_stats()["failed_out"] == n
                )
            )
            h.scheduler.finish_requests([failed, resumed, *others], RequestStatus.FINISHED_ABORTED)
            h.step_until(lambda a=[*ids, *others]: _drained(h, a))
            assert not side.queue and not side.pending_in and side.in_tokens_this_step == 0
            h.step()  # sends the last releases
            assert not side.pending_release
            assert h.connector.num_free_host_blocks == h.connector.num_host_blocks
            assert pool.get_num_free_blocks() == free_at_start
    assert _drained(h, everyone)
    stats = h.connector.swap_stats()
    assert stats["rejected_pool_full"] == cycles
    assert (stats["failed_in"], stats["failed_out"]) == (cycles, 2 * cycles)
    assert stats["saved_out"] >= 4 * cycles
