"""Many engines: vLLM OpenAI servers with LampsScheduler behind the real vllm-router, on CPU.

Two engines (vLLM's OpenAI server with `--scheduler-cls lamps.vllm.LampsScheduler`, a tiny
random-weight Llama and a word-level tokenizer written here, as in test_e2e_http.py) behind
vllm-router's `sticky_least_loaded` policy, which keys a session on the `X-Session-ID` header
(a body `session_id` reaches vLLM but not the policy: tested below). Tool-calling agents resend
their whole conversation at each turn while stateless traffic sweeps the KV caches through the
same router. Each session's turns must land on one engine and find their parked prefix there
(vLLM's own `cached_tokens`); then one engine is killed (SIGKILL, as a crash) while it serves
turns: every turn of every agent still completes (the router retries, else the client does),
the killed engine's sessions move to the survivor, and the survivor ends every session with
nothing parked or pinned left; the client releases the sessions from the router too.

Then vLLM's own data parallelism: one server with `--data-parallel-size 2`, every rank running
LampsScheduler. vLLM's balancer keeps no affinity for HTTP sessions (each turn is a new
request), so the router pins each session to a rank with the `X-data-parallel-rank` header
(`--intra-node-data-parallel-size 2`); without it a session's turns alternate ranks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import re
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer, ServerProcess, free_port, metric

from lamps.harness import tiny_word_ids, write_tiny_chat_tokenizer, write_tiny_llama
from lamps.mechanism.hints import as_vllm_xargs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.requires_cpu_engine,
    pytest.mark.skipif(importlib.util.find_spec("vllm_router") is None,
                       reason="needs vllm-router (scripts/setup-env installs it)"),
]  # fmt: skip

AGENTS = 4
TURNS = 4
KILL_TURN = 2  # one engine is killed while this turn runs
OUTPUT_TOKENS = 8
KILL_TURN_TOKENS = 48  # long enough to be in flight when the engine goes
BLOCK = 32
KV_BLOCKS = 64  # 2,048 tokens per engine
SWEEP_REQUESTS, SWEEP_WORDS = 4, 300
RETRIES, RETRY_SECONDS = 20, 0.5
WORDS = tiny_word_ids()
# Recompute expensive (a large model's per-token time): keeping a parked turn through a tool
# call of seconds is the least waste once the sweep allocates (as in test_e2e_http.py).
LAMPS_CONFIG = {"lamps": {
    "cost_model": {"a_ms_per_token": 100.0, "c_ms": 20.0, "kv_bytes_per_token": 1e6,
                   "link_bytes_per_second": 1e9},
    "allow_swap": False, "log_interval_s": 0.5,
}}  # fmt: skip
SERVER_ARGS = ["--block-size", str(BLOCK), "--num-gpu-blocks-override", str(KV_BLOCKS),
               "--max-model-len", "1024", "--max-num-seqs", "8", "--enforce-eager",
               "--dtype", "float32", "--seed", "0", "--enable-prompt-tokens-details",
               "--distributed-executor-backend", "uni",  # no worker process per engine
               "--enable-log-requests",  # "Added request": when to kill an engine mid-turn
               "--scheduler-cls", "lamps.vllm.LampsScheduler",
               "--additional-config", json.dumps(LAMPS_CONFIG)]  # fmt: skip
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"}
ADDED = "Added request"  # vLLM's log line for a request given to its engine
# Health checked every second and dropped at the first failure: a killed engine leaves at once.
ROUTER_ARGS = ["--policy", "sticky_least_loaded", "--health-check-interval-secs", "1",
               "--health-failure-threshold", "1", "--log-level", "info"]  # fmt: skip
END_GAUGES = ("lamps_sessions", "lamps_parked_blocks", "lamps_pinned_blocks",
              "lamps_parked_sessions", "lamps_parked_kv_tokens", "lamps_queued_requests",
              "lamps_paused_requests", "lamps_memory_over_time_token_seconds",
              "vllm:kv_cache_usage_perc")  # fmt: skip


class Router(ServerProcess):
    """vllm-router (`python -m vllm_router.launch_router`) in front of `worker_urls`."""

    def __init__(self, worker_urls: list[str], log_path: Path, args: list[str]) -> None:
        port = free_port()
        command = [sys.executable, "-m", "vllm_router.launch_router", "--host", "127.0.0.1",
                   "--port", str(port), "--prometheus-port", str(free_port()),
                   "--worker-urls", *worker_urls, *args]  # fmt: skip
        super().__init__(command, port, log_path)

    def placements(self) -> list[tuple[str, str]]:
        """(session id, worker) for every session the policy placed, in order (its log)."""
        return re.findall(r"SLL: new session '([^']+)' -> replica '([^']+)'", self.log_text())

    def finish_session(self, session_id: str) -> str | None:
        """Release a session the policy keeps (as the engine ends it on `session_end`); the
        worker it was on, from the router's log, or None when the router did not know it."""
        request = urllib.request.Request(
            f"{self.url}/finish_session?session_id={session_id}", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200, r.read()
        pattern = rf"SLL: finished session '{re.escape(session_id)}' on replica '([^']+)'"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log_text())
            if found:
                return str(found[-1])
            time.sleep(0.1)
        return None


def gauge(text: str, name: str, **labels: str) -> float:
    """`metric()`, for a series that must be on /metrics (an absent one would read 0)."""
    assert re.search(rf"^{re.escape(name)}[{{ ]", text, re.M), f"{name} is not on /metrics"
    return metric(text, name, **labels)


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(len(WORDS))}" for _ in range(n))


class Agent:
    """A tool-calling agent: its conversation resent whole each turn, retried until it runs."""

    def __init__(self, index: int) -> None:
        self.session = f"agent-{index}"
        self.rng = random.Random(index)
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": words(self.rng, 40)},
            {"role": "user", "content": words(self.rng, 60)},
        ]
        self.prompt_tokens: list[int] = []
        self.cached: list[int] = []  # prompt tokens vLLM found cached, per turn
        self.completion_tokens: list[int] = []
        self.retries = 0

    async def turn(self, client: Any, model: str, max_tokens: int, last: bool) -> None:
        import openai

        xargs = as_vllm_xargs(
            tool="search",
            predicted_output_tokens=max_tokens,
            predicted_api_seconds=5.0,
            session_end=1 if last else None,
        )
        body = {"allowed_token_ids": WORDS, "vllm_xargs": xargs}
        # The header, not the body's session_id: the router's policy reads no body field of a
        # chat request (see test_a_session_id_in_the_body_is_not_kept_by_the_router).
        headers = {"X-Session-ID": self.session}
        for _ in range(RETRIES):
            try:
                resp = await client.chat.completions.create(
                    model=model, messages=self.messages, max_tokens=max_tokens,
                    extra_body=body, extra_headers=headers,
                )  # fmt: skip
                break
            except (openai.APIConnectionError, openai.InternalServerError):
                # Its engine went away mid-request and the router gave up: send it again.
                self.retries += 1
                await asyncio.sleep(RETRY_SECONDS)
        else:
            raise AssertionError(f"{self.session}: turn {len(self.cached)} never completed")
        usage = resp.usage
        self.prompt_tokens.append(usage.prompt_tokens)
        self.cached.append(usage.prompt_tokens_details.cached_tokens or 0)
        self.completion_tokens.append(usage.completion_tokens)
        call = {"id": f"call-{len(self.cached)}", "type": "function",
                "function": {"name": "search", "arguments": "{}"}}  # fmt: skip
        self.messages.append(
            {"role": "assistant", "content": resp.choices[0].message.content, "tool_calls": [call]}
        )
        self.messages.append({"role": "tool", "tool_call_id": call["id"],
                              "content": words(self.rng, 20)})  # fmt: skip

    def kept_prefix(self, k: int) -> bool:
        """Whether turn `k` found the previous turn's prompt cached (its full blocks)."""
        return self.cached[k] >= BLOCK * (self.prompt_tokens[k - 1] // BLOCK)


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


def client_for(router: Router) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=router.url + "/v1", api_key="none", max_retries=0, timeout=120)


async def scrape(engines: list[OpenAIServer]) -> list[str]:
    return list(await asyncio.gather(*(asyncio.to_thread(e.metrics) for e in engines)))


async def kill_when_added(engine: OpenAIServer, before: int, timeout: float = 60.0) -> None:
    """SIGKILL `engine` once its log shows more than `before` requests added to its engine
    (`--enable-log-requests`): a turn is then in flight there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.log_text().count(ADDED) > before:
            engine.kill()
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{engine.url} was sent no request within {timeout:.0f} s")


def settled(engine: OpenAIServer, timeout: float = 10.0) -> str:
    """The engine's /metrics once it tracks no session (the last step's stats reached it)."""
    deadline = time.monotonic() + timeout
    while True:
        text = engine.metrics()
        if metric(text, "lamps_sessions") == 0 or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("router-model")
    return write_tiny_chat_tokenizer(write_tiny_llama(root / "model", max_len=1024))


@pytest.fixture(scope="module")
def servers(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two one-engine servers and one with two data-parallel ranks, all with LAMPS, started
    together (starting is most of this file's time)."""
    root = tmp_path_factory.mktemp("servers")
    started = {
        name: OpenAIServer(model_dir, root / f"{name}.log", [*SERVER_ARGS, *extra], ENV)
        for name, extra in (("a", []), ("b", []), ("dp", ["--data-parallel-size", "2"]))
    }
    try:
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(lambda server: server.wait_ready(600), started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def engines(servers: dict[str, OpenAIServer], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The router in front of the two one-engine servers."""
    pair = [servers["a"], servers["b"]]
    router = Router([e.url for e in pair], tmp_path_factory.mktemp("router") / "router.log",
                    ROUTER_ARGS)  # fmt: skip
    try:
        router.wait_ready(60)
        yield router, pair
    finally:
        router.stop()


def test_sessions_stick_to_an_engine_and_survive_its_crash(engines: Any) -> None:
    router, pair = engines
    survivor, victim = pair
    model = survivor.model
    agents = [Agent(i) for i in range(AGENTS)]
    waiting: list[list[str]] = []  # both engines' /metrics while the tools run

    async def run() -> None:
        client = client_for(router)
        try:
            for k in range(TURNS):
                tokens = KILL_TURN_TOKENS if k == KILL_TURN else OUTPUT_TOKENS
                added = victim.log_text().count(ADDED)
                turns = asyncio.gather(*(a.turn(client, model, tokens, k == TURNS - 1)
                                         for a in agents))  # fmt: skip
                if k == KILL_TURN:
                    await kill_when_added(victim, added)
                await turns
                if k < KILL_TURN:
                    await sweep(client, model, k)  # the tool calls run meanwhile
                    waiting.append(await scrape(pair))
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(run(), timeout=300))
    expected = [KILL_TURN_TOKENS if k == KILL_TURN else OUTPUT_TOKENS for k in range(TURNS)]
    assert all(a.completion_tokens == expected for a in agents), router.tail()

    # The router placed every session once, on both engines; a session moved only off the
    # killed engine, once, onto the survivor.
    first: dict[str, str] = {}
    moves: dict[str, str] = {}
    for sid, url in router.placements():
        if sid in first:
            assert sid not in moves, (sid, router.tail())
            moves[sid] = url
        first.setdefault(sid, url)
    assert set(first) == {a.session for a in agents}
    on_victim = {sid for sid, url in first.items() if url == victim.url}
    assert 0 < len(on_victim) < AGENTS
    assert moves == dict.fromkeys(on_victim, survivor.url)
    # The kill cut requests the router had sent to the victim: it reported them failed.
    assert re.search(rf"ERROR.*{re.escape(victim.url)}", router.log_text()), router.tail()

    # While the tools ran, each session was tracked by exactly one engine, parked turns
    # were pinned, and the pins are used KV (vllm:kv_cache_usage_perc) on an idle engine.
    for texts in waiting:
        assert sum(gauge(t, "lamps_sessions") for t in texts) == AGENTS
        for t in texts:
            pinned = gauge(t, "lamps_pinned_blocks")
            assert pinned == gauge(t, "lamps_parked_blocks")
            assert gauge(t, "lamps_parked_kv_tokens", strategy="preserve") == BLOCK * pinned
            usage = gauge(t, "vllm:kv_cache_usage_perc")
            assert usage * (KV_BLOCKS - 1) == pytest.approx(pinned, abs=1e-6)
            assert (gauge(t, "lamps_memory_over_time_token_seconds") > 0) == (pinned > 0)
            assert gauge(t, "lamps_queued_requests") == gauge(t, "lamps_paused_requests") == 0
    assert max(sum(gauge(t, "lamps_pinned_blocks") for t in ts) for ts in waiting) > 0

    # Every later turn found its session's previous prompt cached on its engine, but the
    # one turn of each moved session that reached the survivor, which knew nothing of it.
    moved_at: dict[str, int] = {}
    for a in agents:
        fresh = [k for k in range(1, TURNS) if a.cached[k] == 0]
        if a.session in on_victim:
            assert len(fresh) == 1 and fresh[0] >= KILL_TURN, (a.session, a.cached)
            moved_at[a.session] = fresh[0]
        else:
            assert fresh == [], (a.session, a.cached)
        assert all(a.kept_prefix(k) for k in range(1, TURNS) if k not in fresh), a.cached

    # The survivor ended every session; nothing it parked or pinned is left.
    text = settled(survivor)
    for name in END_GAUGES:
        assert gauge(text, name) == 0, (name, survivor.tail())
    assert metric(text, "lamps_sessions_ended_total") == AGENTS
    takeovers = sum(TURNS - 1 - moved_at.get(a.session, 0) for a in agents)
    assert metric(text, "lamps_takeovers_total") == takeovers
    assert metric(text, "lamps_recovered_tokens_total") == metric(text, "lamps_parked_tokens_total")
    # The client releases its sessions from the router too: all of them were on the survivor.
    assert all(router.finish_session(a.session) == survivor.url for a in agents)
    print(f"\nsessions moved off the killed engine: {sorted(on_victim)}, client retries: "
          f"{sum(a.retries for a in agents)}")  # fmt: skip


@pytest.fixture(scope="module")
def dp_ranks(servers: dict[str, OpenAIServer], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The router in front of the server with two data-parallel ranks, one worker per rank."""
    server = servers["dp"]
    router = Router([server.url], tmp_path_factory.mktemp("router-dp") / "router.log",
                    [*ROUTER_ARGS, "--intra-node-data-parallel-size", "2",
                     "--api-key", "none"])  # fmt: skip
    try:
        router.wait_ready(60)
        yield router, server
    finally:
        router.stop()


def test_router_keeps_each_session_on_one_rank(dp_ranks: Any) -> None:
    router, server = dp_ranks
    agents = [Agent(i) for i in range(AGENTS)]
    turns = 3

    async def run() -> None:
        client = client_for(router)
        try:
            for k in range(turns):
                await asyncio.gather(*(a.turn(client, server.model, OUTPUT_TOKENS,
                                              k == turns - 1) for a in agents))  # fmt: skip
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(run(), timeout=300))
    ranks = {sid: url.rpartition("@")[2] for sid, url in router.placements()}
    assert sorted(ranks) == sorted(a.session for a in agents)  # each placed once
    assert set(ranks.values()) == {"0", "1"}
    for a in agents:
        assert a.completion_tokens == [OUTPUT_TOKENS] * turns
        assert all(a.kept_prefix(k) for k in range(1, turns)), a.cached
    for sid, rank in ranks.items():
        assert router.finish_session(sid) == f"{server.url}@{rank}"
    text = settled(server)
    for rank in ("0", "1"):
        mine = sum(r == rank for r in ranks.values())
        assert metric(text, "lamps_session_turns_total", engine=rank) == mine * turns
        assert metric(text, "lamps_takeovers_total", engine=rank) == mine * (turns - 1)
        assert metric(text, "lamps_sessions_ended_total", engine=rank) == mine
        for name in END_GAUGES:
            assert gauge(text, name, engine=rank) == 0, (name, rank)


def test_a_session_id_in_the_body_is_not_kept_by_the_router(dp_ranks: Any) -> None:
    # vLLM reads a session id from the body as from the header, but vllm-router's policies
    # see a chat request's messages, not its other fields (`extract_text_for_routing`): the
    # router places such a request as stateless, wherever its load rule says.
    router, server = dp_ranks
    before = router.placements()
    turns_before = metric(server.metrics(), "lamps_session_turns_total")
    messages = [{"role": "user", "content": words(random.Random(9), 60)}]
    for k in range(2):
        status, body = router.post("/v1/chat/completions", {
            "model": server.model, "messages": messages, "max_tokens": 4,
            "allowed_token_ids": WORDS, "session_id": "body-only",
            "vllm_xargs": as_vllm_xargs(tool="search", session_end=k or None),
        })  # fmt: skip
        assert status == 200, body
        messages += [{"role": "assistant", "content": body["choices"][0]["message"]["content"]},
                     {"role": "user", "content": words(random.Random(10 + k), 10)}]  # fmt: skip
    assert router.placements() == before  # no session placed, none kept
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        turns = metric(server.metrics(), "lamps_session_turns_total") - turns_before
        if turns == 2:
            break
        time.sleep(0.2)
    assert turns == 2  # ... while the engines did see session turns


def test_without_a_rank_vllms_balancer_splits_a_session(dp_ranks: Any) -> None:
    _, server = dp_ranks
    prompt = words(random.Random(7), 120)

    def turns_by_rank() -> list[float]:
        text = server.metrics()
        return [metric(text, "lamps_session_turns_total", engine=r) for r in ("0", "1")]

    def two_turns(sid: str, headers: dict[str, str], context: str) -> tuple[list[float], int]:
        """Two turns of session `sid` sent to the server itself: turns per rank, cached."""
        before = turns_by_rank()
        cached = 0
        for _ in range(2):
            status, body = server.post("/v1/completions", {
                "model": server.model, "prompt": context, "max_tokens": 4,
                "allowed_token_ids": WORDS, "vllm_xargs": as_vllm_xargs(tool="search"),
            }, {"X-Session-ID": sid, **headers})  # fmt: skip
            assert status == 200, body
            cached = body["usage"]["prompt_tokens_details"]["cached_tokens"] or 0
            context += body["choices"][0]["text"] + " " + words(random.Random(8), 10)
        deadline = time.monotonic() + 10
        while sum(turns_by_rank()) < sum(before) + 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the last step's stats reach the front end
        return [n - b for n, b in zip(turns_by_rank(), before, strict=True)], cached

    # vLLM's balancer places every request anew, by load: a session's turns go wherever the
    # load is least, and a turn on the other rank finds nothing of the first. Parked turns of
    # the tests before count as load (LAMPS reports them), so the first sessions may all go to
    # the emptier rank; as they park there, it fills and the balancer moves on. Each session
    # has its own prompt: with a shared one, the other rank may hold it from an earlier session.
    splits = []
    for i in range(8):
        turns, cached = two_turns(f"unpinned{i}", {}, words(random.Random(100 + i), 120))
        if turns == [1, 1]:
            splits.append(cached)
            break
    assert splits and splits[0] == 0, "no unpinned session's turns were split across the ranks"
    # With the rank a router (or client) sets, both turns run on it and the prefix stays.
    turns, cached = two_turns("pinned", {"X-data-parallel-rank": "1"}, prompt)
    assert turns == [0, 2] and cached >= BLOCK * 3
