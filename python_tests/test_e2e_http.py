"""End to end over HTTP: tool-calling agents against vLLM's OpenAI server with LampsScheduler.

Two real servers on 127.0.0.1 (CPU, a tiny random-weight Llama and a word-level tokenizer with
a chat template, both written here): one with `--scheduler-cls lamps.vllm.LampsScheduler`, one
with vLLM's default scheduler. On each, agents run the loop agent frameworks run over the
OpenAI API: a chat request, the answer taken as a tool call, the tool's result appended, the
whole conversation resent as the next request, with `session_id` (body field or `X-Session-ID`
header) and LAMPS hints in `vllm_xargs`. While every agent waits for its tool, other
(stateless) traffic sweeps more fresh tokens through the KV cache than it holds, which is what
vLLM's LRU prefix cache loses a finished turn to. The tokenizer decodes and encodes any word
sequence back to itself, so each next turn resends exactly the tokens of the previous one and
what a parked turn saved is measurable: vLLM's own `prompt_tokens_details.cached_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer, metric

from lamps.harness import tiny_word_ids, write_tiny_chat_tokenizer, write_tiny_llama
from lamps.mechanism.hints import as_vllm_xargs

AGENTS = 6
TURNS = 4
OUTPUT_TOKENS = 8
BLOCK = 32
KV_BLOCKS = 96  # 3,072 tokens
SWEEP_REQUESTS, SWEEP_WORDS = 10, 400  # ~4,000 fresh tokens while the agents wait: > the cache
BAD_AGENT = 1
WORDS = tiny_word_ids()
# A model whose recompute is expensive (per-token time of a large model, 64-token steps on both
# servers, so a recompute takes many steps): keeping a finished turn through a tool call of a
# few seconds is then the least waste, and the test exercises the pinned path; the strategy
# choice itself is tested in test_sessions.py.
LAMPS_CONFIG = {"lamps": {
    "cost_model": {"a_ms_per_token": 100.0, "c_ms": 20.0, "kv_bytes_per_token": 1e6,
                   "link_bytes_per_second": 1e9},
    "allow_swap": False, "log_interval_s": 0.5,
}}  # fmt: skip
SERVER_ARGS = ["--block-size", str(BLOCK), "--num-gpu-blocks-override", str(KV_BLOCKS),
               "--max-model-len", "1024", "--max-num-seqs", "16", "--enforce-eager",
               "--max-num-batched-tokens", "64",
               "--dtype", "float32", "--seed", "0", "--enable-prompt-tokens-details",
               "--distributed-executor-backend", "uni"]  # fmt: skip


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(len(WORDS))}" for _ in range(n))


class Agent:
    """One tool-calling agent: a conversation resent whole at every turn."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.session = f"agent-{index}"
        rng = random.Random(index)
        self.rng = rng
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": words(rng, 40)},
            {"role": "user", "content": words(rng, 60)},
        ]
        self.cached: list[int] = []  # prompt tokens vLLM found cached, per turn
        self.completion_tokens: list[int] = []

    async def turn(self, client: Any, model: str, k: int) -> None:
        last = k == TURNS - 1
        xargs = as_vllm_xargs(
            tool="search",
            predicted_output_tokens=OUTPUT_TOKENS,
            # The "tool" is the other traffic's sweep, which takes seconds on a busy machine: a
            # prediction far shorter would have LAMPS expect the turn back before it is evicted.
            predicted_api_seconds=5.0,
            session_end=1 if last else None,
        )
        if self.index == BAD_AGENT and k == 0:
            xargs["lamps_predicted_api_seconds"] = "soon"  # an invalid hint: warned, not fatal
        body: dict[str, Any] = {"allowed_token_ids": WORDS, "vllm_xargs": xargs}
        headers: dict[str, str] = {}
        if self.index % 2:
            headers["X-Session-ID"] = self.session  # as a router in front of vLLM sets it
        else:
            body["session_id"] = self.session
        resp = await client.chat.completions.create(
            model=model, messages=self.messages, max_tokens=OUTPUT_TOKENS,
            extra_body=body, extra_headers=headers,
        )  # fmt: skip
        usage = resp.usage
        self.cached.append(usage.prompt_tokens_details.cached_tokens or 0)
        self.completion_tokens.append(usage.completion_tokens)
        call = {"id": f"call-{k}", "type": "function",
                "function": {"name": "search", "arguments": "{}"}}  # fmt: skip
        self.messages.append(
            {"role": "assistant", "content": resp.choices[0].message.content, "tool_calls": [call]}
        )
        self.messages.append({"role": "tool", "tool_call_id": f"call-{k}",
                              "content": words(self.rng, 20)})  # fmt: skip


async def sweep(client: Any, model: str, round_: int) -> None:
    """Stateless one-turn requests (no session) with fresh prompts, two at a time."""
    rng = random.Random(1000 + round_)
    prompts = [words(rng, SWEEP_WORDS) for _ in range(SWEEP_REQUESTS)]
    for i in range(0, len(prompts), 2):
        await asyncio.gather(*(
            client.completions.create(model=model, prompt=p, max_tokens=1,
                                      extra_body={"allowed_token_ids": WORDS})
            for p in prompts[i : i + 2]
        ))  # fmt: skip


async def run_agents(server: OpenAIServer) -> list[Agent]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
    agents = [Agent(i) for i in range(AGENTS)]
    try:
        for k in range(TURNS):
            await asyncio.gather(*(a.turn(client, server.model, k) for a in agents))
            if k < TURNS - 1:
                await sweep(client, server.model, k)  # the tool calls run meanwhile
    finally:
        await client.close()
    return agents


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("http")
    model = write_tiny_chat_tokenizer(write_tiny_llama(root / "model", max_len=1024))
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"}
    lamps = OpenAIServer(model, root / "lamps.log", [*SERVER_ARGS, "--scheduler-cls",
                         "lamps.vllm.LampsScheduler", "--additional-config",
                         json.dumps(LAMPS_CONFIG)], env)  # fmt: skip
    vllm = OpenAIServer(model, root / "vllm.log", SERVER_ARGS, env)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.wait_ready(420), (lamps, vllm)))
        yield {"lamps": lamps, "vllm": vllm}
    finally:
        lamps.stop()
        vllm.stop()


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
def test_agents_over_http_keep_their_turns_with_lamps(servers: dict[str, OpenAIServer]) -> None:
    lamps, vllm = servers["lamps"], servers["vllm"]

    async def both() -> tuple[list[Agent], list[Agent]]:
        return await asyncio.wait_for(
            asyncio.gather(run_agents(lamps), run_agents(vllm)), timeout=300
        )

    with_lamps, without = asyncio.run(both())
    for agents in (with_lamps, without):
        assert all(a.completion_tokens == [OUTPUT_TOKENS] * TURNS for a in agents)
    text = lamps.metrics()

    # Every parked turn was taken over by its session's next request, all of it cached.
    takeovers = AGENTS * (TURNS - 1)
    assert metric(text, "lamps_takeovers_total") == takeovers, lamps.tail()
    parked = metric(text, "lamps_parked_tokens_total")
    recovered = metric(text, "lamps_recovered_tokens_total")
    assert parked > 0 and recovered == parked
    assert metric(text, "lamps_session_turns_total") == AGENTS * TURNS
    parks = sum(metric(text, "lamps_session_parks_total", strategy=x)
                for x in ("preserve", "discard", "swap"))  # fmt: skip
    assert parks == takeovers  # the last turns ended their sessions instead
    # Pinned: at once (recompute in 64-token steps is dear), or once the sweep allocated.
    pinned = metric(text, "lamps_session_parks_total", strategy="preserve")
    assert pinned + metric(text, "lamps_session_redecided_total") >= 1
    assert metric(text, "lamps_pressure_releases_total") == 0
    cached_lamps = sum(sum(a.cached[1:]) for a in with_lamps)
    cached_vllm = sum(sum(a.cached[1:]) for a in without)
    assert cached_lamps >= parked  # what vLLM itself reports to the clients
    assert cached_vllm < cached_lamps / 2, (cached_vllm, cached_lamps)
    print(f"\nprefix tokens recovered by the agents' next turns: LAMPS {cached_lamps}, "
          f"vLLM {cached_vllm} (parked {parked:.0f} in {takeovers} takeovers)")  # fmt: skip

    # All sessions ended with their last request's hint: nothing parked, no block held.
    assert metric(text, "lamps_sessions") == 0
    assert metric(text, "lamps_parked_blocks") == 0
    assert metric(text, "lamps_sessions_ended_total") == AGENTS
    assert metric(text, "vllm:kv_cache_usage_perc") == 0

    # The invalid hint: HTTP 200 (the turn ran), one warning naming the field, counted.
    assert metric(text, "lamps_hint_warnings_total") == 1
    warnings = [line for line in lamps.log_text().splitlines() if "ignoring hint" in line]
    assert len(warnings) == 1 and "'lamps_predicted_api_seconds'" in warnings[0]
    assert re.search(r"request \S+: ignoring", warnings[0])
    assert metric(text, "lamps_hinted_total") == AGENTS * TURNS


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
def test_hint_spellings_over_http(servers: dict[str, OpenAIServer]) -> None:
    lamps = servers["lamps"]
    body = {"model": lamps.model, "prompt": "w1 w2 w3", "max_tokens": 2}
    status, _ = lamps.post("/v1/completions", {**body, "vllm_xargs": {"lamps_tool": "calc"}})
    assert status == 200
    # vLLM types vllm_xargs values as strings, numbers or lists: the nested form is refused.
    status, _ = lamps.post("/v1/completions", {**body, "vllm_xargs": {"lamps": {"tool": "x"}}})
    assert status == 400


def readme_example(tag: str) -> str:
    """The code block under `<!-- e2e-http: TAG -->` in the README."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(rf"<!-- e2e-http: {tag} -->\n```\w+\n(.*?)```", readme, re.S)
    assert match, f"README has no example tagged {tag}"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
@pytest.mark.parametrize("tag", ["curl", "openai"])
def test_readme_examples_run(servers: dict[str, OpenAIServer], tag: str) -> None:
    lamps = servers["lamps"]
    if tag == "curl" and shutil.which("curl") is None:
        pytest.skip("needs curl")
    before = metric(lamps.metrics(), "lamps_hinted_total")
    code = readme_example(tag).replace("http://127.0.0.1:8000", lamps.url)
    code = code.replace('"MODEL"', json.dumps(lamps.model))
    command = ["bash", "-c", code] if tag == "curl" else [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if tag == "curl":
        assert json.loads(out.stdout)["choices"][0]["finish_reason"], out.stdout
    else:
        assert "prompt tokens were cached" in out.stdout
    time.sleep(0.5)  # the last step's stats reach the front end
    assert metric(lamps.metrics(), "lamps_hinted_total") > before
