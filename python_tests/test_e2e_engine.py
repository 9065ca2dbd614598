"""End to end: a real AsyncLLM engine on CPU with scheduler_cls="lamps.vllm.LampsScheduler"."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

TURNS = 3
TOKENS_PER_TURN = 4
# (predicted API seconds sent as a hint, real API latency): the first kind is preserved,
# the second (a long predicted call) is discarded.
SESSIONS = [(0.0, 0.02), (0.0, 0.02), (1e4, 0.05), (1e4, 0.05)]


async def run_session(engine: Any, index: int, predicted: float, latency: float) -> list[int]:
    """One API-calling session; returns the tokens received per turn."""
    from vllm import SamplingParams
    from vllm.engine.protocol import StreamingInput
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    turn_done = asyncio.Event()

    def params() -> SamplingParams:
        return SamplingParams(
            max_tokens=TOKENS_PER_TURN,
            ignore_eos=True,
            output_kind=RequestOutputKind.DELTA,
            extra_args={
                "lamps": {
                    "tool": f"tool{index % 2}",
                    "predicted_api_seconds": predicted,
                    "predicted_output_tokens": TOKENS_PER_TURN,
                }
            },
        )

    async def inputs() -> AsyncGenerator[StreamingInput, None]:
        prompt = [3 + (index * 7 + i) % 500 for i in range(160 + 16 * index)]
        yield StreamingInput(prompt=TokensPrompt(prompt_token_ids=prompt), sampling_params=params())
        for turn in range(1, TURNS):
            await turn_done.wait()
            turn_done.clear()
            await asyncio.sleep(latency)  # the API call
            result = [10 + turn, 20 + index, 30]
            yield StreamingInput(
                prompt=TokensPrompt(prompt_token_ids=result), sampling_params=params()
            )
        await turn_done.wait()

    per_turn = [0]
    async for out in engine.generate(inputs(), params(), request_id=f"session-{index}"):
        completion = out.outputs[0]
        per_turn[-1] += len(completion.token_ids)
        if completion.finish_reason is not None and not out.finished:
            per_turn.append(0)
            turn_done.set()
        if out.finished:
            break
    return [n for n in per_turn if n] if per_turn[-1] == 0 else per_turn


async def run_all(model_dir: Path) -> list[list[int]]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=str(model_dir),
        skip_tokenizer_init=True,
        scheduler_cls="lamps.vllm.LampsScheduler",
        additional_config={"lamps": {"log_interval_s": 0.05, "allow_swap": False}},
        enforce_eager=True,
        enable_prefix_caching=True,
        dtype="float32",
        max_model_len=512,
        max_num_seqs=8,
        max_num_batched_tokens=512,
        gpu_memory_utilization=0.1,
        seed=0,
    )
    engine = AsyncLLM.from_engine_args(args)
    try:
        return await asyncio.wait_for(
            asyncio.gather(
                *(run_session(engine, i, p, lat) for i, (p, lat) in enumerate(SESSIONS))
            ),
            timeout=180,
        )
    finally:
        engine.shutdown()


def lamps_totals(text: str) -> dict[str, int]:
    """Sum the per-interval counters of every 'LAMPS:' log line."""
    totals: dict[str, int] = {}
    for line in text.splitlines():
        if "LAMPS: running=" not in line:
            continue
        for key, value in re.findall(r"(\w+)=(\d+)(?=\s|$)", line.split("LAMPS: ", 1)[1]):
            if key not in ("running", "waiting", "paused"):
                totals[key] = totals.get(key, 0) + int(value)
    return totals


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
# vLLM's AsyncLLM.shutdown() leaves its zmq context to the garbage collector, which reports it
# as an unclosed resource; collected inside this test (gc.collect below) so it lands here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_async_engine_runs_sessions_with_preserve_and_discard(
    tiny_llama_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    results = asyncio.run(run_all(tiny_llama_dir))
    gc.collect()
    assert results == [[TOKENS_PER_TURN] * TURNS] * len(SESSIONS)
    captured = capfd.readouterr()
    totals = lamps_totals(captured.out + captured.err)
    assert "LampsScheduler" in captured.out + captured.err
    assert totals.get("pauses", 0) >= len(SESSIONS) * (TURNS - 1), totals
    assert totals.get("preserve", 0) >= 1, totals
    assert totals.get("discard", 0) >= 1, totals
    assert totals.get("resumed", 0) == len(SESSIONS) * (TURNS - 1), totals
    # Discarded contexts came back partly from the prefix cache (full 128-token CPU blocks).
    assert totals.get("prefix_hit_tokens", 0) > 0, totals
    assert totals.get("recomputed_tokens", 0) > 0, totals
