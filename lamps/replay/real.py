"""Fidelity check: the same policies on a real vLLM engine (AsyncLLM) on CPU, wall clock.

A tiny random-weight Llama is written to a temporary directory (no hub access). The workload
is scaled down (token counts divided by ``TOKEN_SCALE``, API durations by ``TIME_SCALE``) so a
short window runs in seconds, and the KV cache is capped at ``KV_BLOCKS`` blocks of
``BLOCK_SIZE`` tokens so the policies meet memory pressure. Sessions use vLLM's streaming
input (``StreamingInput``); the stock ``vllm`` policy re-submits the whole context as a new
request after each call.
What the client cannot observe from outside the engine (queueing time, recomputed tokens,
swapped bytes) is reported as None; swap is off (no swap path on this CPU engine).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lamps.harness import TINY_LLAMA_VOCAB, write_tiny_llama
from lamps.replay.metrics import summarize
from lamps.replay.modes import EngineKind
from lamps.replay.policies import LampsPolicy, ReplayPolicy, make_policy
from lamps.replay.records import RequestRecord, RunResult
from lamps.replay.runner import ReplayConfig, arrivals_for
from lamps.workloads import Arrival, TraceSegment, Workload, WorkloadRequest

DEFAULTS: dict[str, Any] = {
    "policies": ("vllm", "vllm-preserve", "infercept", "lamps"),
    "qps": (4.0,),
    "duration": 10.0,
    "seeds": (0,),
}
TOKEN_SCALE = 8
TIME_SCALE = 20.0
KV_BLOCKS = 32
BLOCK_SIZE = 32
# Rough figures for the tiny fp32 model on this CPU (2 layers x 2 KV heads x 64 x K/V x 4 B).
TINY_KV_BYTES_PER_TOKEN = 2048.0
TINY_COST = {
    "a_ms_per_token": 0.05,
    "c_ms": 8.0,
    "kv_bytes_per_token": TINY_KV_BYTES_PER_TOKEN,
    "link_bytes_per_second": 5e9,
    "name": "tiny-cpu",
}


def scale_workload(workload: Workload) -> Workload:
    """Token counts / TOKEN_SCALE (prompt >= 8, outputs >= 1), API times / TIME_SCALE."""
    requests = []
    for r in workload.requests:
        segs = tuple(
            TraceSegment(
                max(1, s.output_tokens // TOKEN_SCALE),
                s.api_seconds / TIME_SCALE,
                s.return_tokens // TOKEN_SCALE,
                s.has_api,
            )
            for s in r.segments
        )
        requests.append(
            WorkloadRequest(r.request_id, max(8, r.prompt_tokens // TOKEN_SCALE), segs, r.kind)
        )
    return Workload(f"{workload.name}-scaled", tuple(requests))


@dataclass
class _Stats:
    t0: float = 0.0
    kv: list[tuple[float, float]] = field(default_factory=list)
    preemptions: int = 0


def _stat_logger(stats: _Stats) -> Any:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class Collector(StatLoggerBase):
        """Collects KV usage and preemptions from the engine's per-step stats."""

        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                stats.kv.append((time.monotonic() - stats.t0, scheduler_stats.kv_cache_usage))
            if iteration_stats is not None:
                stats.preemptions += iteration_stats.num_preempted_reqs

        def log_engine_initialized(self) -> None:
            pass

    return Collector


def _engine_args(policy: ReplayPolicy, model_dir: Path, max_len: int) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    extra: dict[str, Any] = {}
    scheduler_cls = None
    policy_name = "fcfs"
    if policy.name in ("infercept", "infercept-paper"):
        cls = policy.scheduler_cls
        scheduler_cls = f"{cls.__module__}.{cls.__qualname__}"
        policy_name = "priority"
        extra = {"infercept": {"cost_model": TINY_COST}}
    elif policy.name in ("lamps-authors", "continuum", "continuum-code"):
        cls = policy.scheduler_cls
        scheduler_cls = f"{cls.__module__}.{cls.__qualname__}"
        policy_name = policy.queue_policy
        extra = policy.additional_config()
    elif isinstance(policy, LampsPolicy):
        scheduler_cls = "lamps.vllm.LampsSyncScheduler"
        cost = {k: v for k, v in TINY_COST.items() if k != "name"}
        extra = {
            "lamps": {
                "cost_model": cost,
                "ranking": policy.ranking,
                "allow_swap": False,
                "log_interval_s": 0.0,
            }
        }
    return AsyncEngineArgs(
        model=str(model_dir),
        skip_tokenizer_init=True,
        scheduler_cls=scheduler_cls,
        scheduling_policy=policy_name,
        additional_config=extra,
        async_scheduling=False,
        enforce_eager=True,
        enable_prefix_caching=True,
        dtype="float32",
        max_model_len=max_len,
        max_num_seqs=64,
        max_num_batched_tokens=max_len,
        num_gpu_blocks_override=KV_BLOCKS,
        block_size=BLOCK_SIZE,
        gpu_memory_utilization=0.1,
        disable_log_stats=False,
        seed=0,
    )


def _tokens(index: int, start: int, stop: int) -> list[int]:
    return [3 + (index * 131 + p * 7) % (TINY_LLAMA_VOCAB - 3) for p in range(start, stop)]


async def _session(engine: Any, policy: ReplayPolicy, rec: RequestRecord, t0: float) -> None:
    from vllm import SamplingParams
    from vllm.engine.protocol import StreamingInput
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    a = rec.arrival
    tmpl = a.request
    await asyncio.sleep(max(0.0, t0 + a.time - time.monotonic()))

    def params(k: int) -> SamplingParams:
        hints = policy.hints(a, k)
        return SamplingParams(
            max_tokens=tmpl.segments[k].output_tokens,
            ignore_eos=True,
            output_kind=RequestOutputKind.DELTA,
            extra_args={"lamps": hints} if hints else None,
        )

    def got(n: int) -> None:
        if n and rec.first_token_time is None:
            rec.first_token_time = time.monotonic() - t0
        rec.output_tokens += n

    if not policy.sessions:
        for k, seg in enumerate(tmpl.segments):
            prompt = TokensPrompt(prompt_token_ids=_tokens(a.index, 0, tmpl.context_before(k)))
            async for out in engine.generate(prompt, params(k), request_id=f"{a.request_id}.{k}"):
                got(len(out.outputs[0].token_ids))
            if seg.has_api:
                await asyncio.sleep(seg.api_seconds)
                rec.api_seconds += seg.api_seconds
        rec.finish_time = time.monotonic() - t0
        return

    turn_done = asyncio.Event()

    async def inputs() -> AsyncGenerator[Any, None]:
        ctx = tmpl.context_before(0)
        yield StreamingInput(
            prompt=TokensPrompt(prompt_token_ids=_tokens(a.index, 0, ctx)),
            sampling_params=params(0),
        )
        for k in range(1, len(tmpl.segments)):
            await turn_done.wait()
            turn_done.clear()
            seg = tmpl.segments[k - 1]
            await asyncio.sleep(seg.api_seconds)
            rec.api_seconds += seg.api_seconds
            ctx = tmpl.context_before(k)
            returned = _tokens(a.index, ctx - seg.return_tokens, ctx)
            yield StreamingInput(
                prompt=TokensPrompt(prompt_token_ids=returned or [5]), sampling_params=params(k)
            )
        await turn_done.wait()

    async for out in engine.generate(inputs(), params(0), request_id=a.request_id):
        completion = out.outputs[0]
        got(len(completion.token_ids))
        if completion.finish_reason is not None and not out.finished:
            turn_done.set()
        if out.finished:
            break
    rec.finish_time = time.monotonic() - t0


async def _run_policy(
    policy: ReplayPolicy, arrivals: list[Arrival], model_dir: Path, max_len: int
) -> tuple[RunResult, _Stats]:
    from vllm.v1.engine.async_llm import AsyncLLM

    stats = _Stats()
    engine = AsyncLLM.from_engine_args(
        _engine_args(policy, model_dir, max_len), stat_loggers=[_stat_logger(stats)]
    )
    records = [RequestRecord(a) for a in arrivals]
    try:
        t0 = stats.t0 = time.monotonic()
        stats.kv.clear()
        wall = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(_session(engine, policy, r, t0) for r in records)), timeout=600
        )
        wall = time.perf_counter() - wall
    finally:
        engine.shutdown()
    for r in records:
        # Not observable from outside the engine.
        r.service_seconds = math.nan
    return RunResult(policy.name, records, stats.kv, 0, wall, wall), stats


def run_real(
    workload: Workload, config: ReplayConfig, *, progress_stream: TextIO = sys.stderr
) -> list[dict[str, Any]]:
    """Replays a scaled-down window through a real AsyncLLM per (policy, rate)."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    scaled = scale_workload(workload)
    arrivals = arrivals_for(scaled, config)
    max_ctx = max(a.request.final_context_tokens for run in arrivals.values() for a in run)
    max_len = max(512, -(-(max_ctx + 2) // 128) * 128)
    tmp = Path(tempfile.mkdtemp(prefix="lamps-real-"))
    rows = []
    try:
        model_dir = write_tiny_llama(tmp / "model", max_len)
        for q in config.qps:
            for name in config.policies:
                policy = make_policy(name, noise=config.noise, seed=config.seed)
                print(
                    f"real engine: {name} @ {q:g} req/s, {len(arrivals[q])} requests",
                    file=progress_stream,
                )
                result, stats = asyncio.run(_run_policy(policy, arrivals[q], model_dir, max_len))
                row = summarize(
                    result,
                    q,
                    kv_bytes_per_token=TINY_KV_BYTES_PER_TOKEN,
                    extra={
                        "engine": EngineKind.REAL.value,
                        "noise": config.noise,
                        "duration": config.duration,
                        "workload": scaled.name,
                        "seed": config.seed,
                        "token_scale": TOKEN_SCALE,
                        "time_scale": TIME_SCALE,
                    },
                )
                row.update(
                    queueing_mean=None,
                    queueing_p99=None,
                    recomputed_tokens=None,
                    swapped_bytes=None,
                    preemptions=stats.preemptions,
                )
                rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
