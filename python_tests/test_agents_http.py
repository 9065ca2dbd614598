"""`lamps agents`: coding-agent traces replayed against an OpenAI-compatible server over HTTP.

The slow test runs vLLM's real OpenAI server on CPU (a tiny random-weight Llama written here,
`LampsScheduler`, `--enable-prompt-tokens-details`) and the real client against it, with the
token counts scaled down. The others use a stand-in completions server on 127.0.0.1 written
below (not vLLM: it streams what the client asks for, records the requests, and fails on
purpose), for what a healthy server never does: errors, cut streams, no cached-token counts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from coding_traces import extending, request, subagent, trace, write
from openai_server import OpenAIServer, metric

from lamps.agents.conversations import load_conversations, scale_conversation
from lamps.agents.prompts import ConversationPrompts, TokenSpace
from lamps.harness import TINY_LLAMA_VOCAB, write_tiny_chat_tokenizer, write_tiny_llama
from lamps.replay.flows import UserLoop
from lamps.replay.records import RequestRecord
from lamps.workloads.coding import TracedConversation, parse_coding_trace

SCALE = 0.25  # a 64-token trace block becomes 16 tokens


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-stream (the run ended): nothing to report


class StandInServer:
    """A completions server on 127.0.0.1 that streams as vLLM does, and fails on purpose.

    ``plan[(n, k)]``: what the ``k``-th request (from 1) of the session whose id ends in
    ``-n`` gets instead of an answer: an HTTP status, or ``"cut"`` (the stream stops after one
    chunk). It reports no ``prompt_tokens_details`` (as vLLM without
    ``--enable-prompt-tokens-details``)."""

    def __init__(
        self, plan: dict[tuple[int, int], int | str] | None = None, *,
        token_seconds: float = 0.0, max_model_len: int = 4096,
    ) -> None:  # fmt: skip
        self.plan = plan or {}
        self.token_seconds = token_seconds
        self.max_model_len = max_model_len
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []  # (body, headers)
        self._per_session: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def _action(self, body: dict[str, Any], headers: dict[str, str]) -> int | str | None:
        with self._lock:
            self.requests.append((body, headers))
            session = str(body.get("session_id", ""))
            self._per_session[session] += 1
            conversation = int(session.rsplit("-", 1)[1]) if "-" in session else -1
            return self.plan.get((conversation, self._per_session[session]))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    model = {"id": "stand-in", "max_model_len": server.max_model_len}
                    self._json(200, {"data": [model]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                action = server._action(body, dict(self.headers))
                if isinstance(action, int):
                    self._json(action, {"error": {"message": "on purpose", "code": action}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                n = int(body["max_tokens"])
                for i in range(n):
                    time.sleep(server.token_seconds)
                    chunk = {"choices": [{"index": 0, "text": "x", "token_ids": [100 + i]}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if action == "cut":
                        return
                usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": n,
                         "total_tokens": len(body["prompt"]) + n}  # fmt: skip
                self.wfile.write(
                    f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
                )
                self.wfile.write(b"data: [DONE]\n\n")

        return Handler


def three_traces(directory: Path, *, think: float = 0.05) -> Path:
    """Three small conversations (64-token blocks), one with two sub-agents before turn 2."""

    def conv(turns: int, first: int, out: int) -> list[dict[str, Any]]:
        reqs = extending(turns, first=first, grow=400, out=out)
        for r in reqs:
            r["think_time"] = think
        return reqs

    parent = conv(4, 1600, 64)
    subs = [subagent(conv(3, 1200, 32), f"sa{i}") for i in (1, 2)]
    return write(directory, {
        "a.json": trace([*parent[:2], *subs, *parent[2:]], "a"),
        "b.json": trace(conv(3, 2000, 64), "b"),
        "c.json": trace(conv(3, 800, 64), "c"),
    })  # fmt: skip


def agents(url: str, traces: Path, out: Path, *extra: str) -> list[str]:
    """`lamps agents` argv for a small run."""
    return ["agents", "--url", url, "--trace", str(traces), "--scale", str(SCALE),
            "--vocab-size", str(TINY_LLAMA_VOCAB), "--warmup", "0", "--allow-dirty",
            "--out", str(out), *extra]  # fmt: skip


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- scaling and prompts ---------------------------------------------------------------------


def test_scaling_keeps_every_hash_id_in_place(tmp_path: Path) -> None:
    reqs = [request(1000, 100, think=2.0), request(1700, 30, stop="end_turn", think=3.0)]
    conv = parse_coding_trace(trace(reqs), "t")
    small = scale_conversation(conv, SCALE)
    assert small.block_size == 16
    assert [len(t.hash_ids) for t in small.turns] == [len(t.hash_ids) for t in conv.turns]
    for big, t in zip(conv.turns, small.turns, strict=True):
        assert np.array_equal(big.hash_ids, t.hash_ids)
        partial = big.input_tokens - len(big.hash_ids) * 64
        assert t.input_tokens == len(t.hash_ids) * 16 + partial // 4
        assert t.gap_seconds == big.gap_seconds
    assert [t.output_tokens for t in small.turns] == [25, 8]  # round(out / 4)
    assert small.segments[0].api_seconds == 3.0  # the gap before the next turn, unscaled
    assert small.shared_prefix_tokens == 32  # (100 + 28) / 4
    with pytest.raises(ValueError, match="scale"):
        scale_conversation(conv, 1.5)


def test_prompts_are_the_replays_tokens_with_the_servers_answers(tmp_path: Path) -> None:
    workload, factor = load_conversations(
        three_traces(tmp_path / "t"), scale=SCALE, max_human_seconds=60, max_tool_seconds=None
    )
    assert factor == SCALE
    flow = UserLoop(workload, 1, seed=0)
    rec = RequestRecord(flow.initial()[0])
    conv = rec.arrival.request
    assert isinstance(conv, TracedConversation)
    space = TokenSpace(TINY_LLAMA_VOCAB, offset=7)
    prompts = ConversationPrompts(space)
    first = prompts.prompt(flow.tokens.prompt(rec, 0))
    assert first == [(t + 7) % TINY_LLAMA_VOCAB for t in flow.tokens.prompt(rec, 0)]
    answer = [500 + i for i in range(conv.turns[0].output_tokens)]
    prompts.answered(answer)
    second = prompts.prompt(flow.tokens.prompt(rec, 1))
    start = conv.turns[0].input_tokens
    assert second[:start] == first  # the next input keeps all of this one
    assert second[start : start + len(answer)] == answer  # and the server's answer after it
    replay = space.ids(flow.tokens.prompt(rec, 1))
    assert second[start + len(answer) :] == replay[start + len(answer) :]
    prompts.answered(None)  # a server that returns no token ids: the earlier answer stays
    third = prompts.prompt(flow.tokens.prompt(rec, 2))
    assert third[start : start + len(answer)] == answer
    assert prompts.spliced_tokens == len(answer)


# -- against the stand-in server ---------------------------------------------------------------

# Conversation 0: its first turn gets HTTP 500, its second a cut stream (both retried). The
# next conversation is refused 3 times (503, every attempt: it fails at its first turn), the
# third with 400 (not retried).
PLAN: dict[tuple[int, int], int | str] = {(0, 1): 500, (0, 3): "cut", (1, 1): 503, (1, 2): 503,
                                          (1, 3): 503, (2, 1): 400}  # fmt: skip


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from lamps.cli import main

    tmp = tmp_path_factory.mktemp("stand-in")
    traces = write(tmp / "t", {
        "a.json": trace(extending(3, first=1600, grow=400, out=64), "a"),
        "b.json": trace(extending(3, first=800, grow=400, out=64), "b"),
        "c.json": trace(extending(3, first=1200, grow=400, out=64), "c"),
    })  # fmt: skip
    server = StandInServer(PLAN)
    try:
        code = main(agents(server.url, traces, tmp / "out", "--users", "1", "--conversations",
                           "3", "--duration", "60", "--retry-delay", "0.01",
                           "--max-tool-seconds", "0.1"))  # fmt: skip
    finally:
        server.stop()
    out = tmp / "out"
    return {
        "code": code,
        "requests": server.requests,
        "row": json.loads((out / "results.json").read_text())["rows"][0],
        "turns": read_jsonl(out / "turns.jsonl"),
        "conversations": read_jsonl(out / "conversations.jsonl"),
        "out": out,
    }


def test_failed_requests_are_retried_or_reported(stand_in_run: dict[str, Any]) -> None:
    assert stand_in_run["code"] == 0
    row, turns = stand_in_run["row"], stand_in_run["turns"]
    by_conv = {c["session"].rsplit("-", 1)[1]: c for c in stand_in_run["conversations"]}
    assert {k: c["status"] for k, c in by_conv.items()} == {"0": "done", "1": "failed",
                                                            "2": "failed"}  # fmt: skip
    first = [t for t in turns if t["session"].endswith("-0")]
    assert [t["attempts"] for t in first] == [2, 2, 1]
    assert first[0]["errors"][0].startswith("http 500") and "stream cut" in first[1]["errors"][0]
    assert all(t["status"] == "done" for t in first)
    refused = [t for t in turns if not t["session"].endswith("-0")]
    assert [(t["attempts"], t["status"], t["turn"]) for t in refused] == [
        (3, "failed", 0),
        (1, "failed", 0),
    ]
    assert row["turns_done"] == 3 and row["turns_failed"] == 2 and row["turns_cut"] == 0
    # Every turn of every conversation is accounted for: the failed ones' later turns unsent.
    total = sum(c["turns"] for c in stand_in_run["conversations"])
    assert row["turns_sent"] + row["turns_unsent"] == total
    assert row["turns_unsent"] == (by_conv["1"]["turns"] - 1) + (by_conv["2"]["turns"] - 1)
    assert row["errors_by_kind"] == {"http 500": 1, "stream cut": 1, "http 503": 3, "http 400": 1}
    assert row["conversations_done"] == 1 and row["conversations_failed"] == 2
    # A failed turn is a turn never served: infinitely late in the TTFT percentiles.
    assert row["turns"] == 5 and row["turns_served"] == 3 and row["ttft_p95"] == float("inf")


def test_no_cached_token_counts_are_reported_as_absent(stand_in_run: dict[str, Any]) -> None:
    row = stand_in_run["row"]
    assert row["cached_tokens_reported"] is False
    assert row["prefix_hit_rate"] is None and row["prefill_tokens_per_turn"] is None
    assert all(t["cached_tokens"] is None for t in stand_in_run["turns"])
    assert (stand_in_run["out"] / "latency.png").stat().st_size > 0
    assert "hit rate" in (stand_in_run["out"] / "table.md").read_text()


def test_requests_carry_the_session_and_learned_hints(stand_in_run: dict[str, Any]) -> None:
    first = [(b, h) for b, h in stand_in_run["requests"] if b["session_id"].endswith("-0")]
    bodies = [b for b, _ in first]
    for body, headers in first:
        assert headers["X-Session-ID"] == body["session_id"]
        assert body["max_tokens"] == body["min_tokens"] == 16 and body["ignore_eos"] is True
        assert body["stream"] and body["stream_options"] == {"include_usage": True}
    # Turn 0 (sent twice): nothing seen yet, no prediction; turn 1: the first answer's length.
    assert bodies[0]["vllm_xargs"] == {"lamps_tool": "coding"}
    turn1 = bodies[2]["vllm_xargs"]
    assert turn1["lamps_predicted_output_tokens"] == 16
    assert 0.1 <= turn1["lamps_predicted_api_seconds"] < 1.0  # the gap it waited (capped)
    last = bodies[-1]["vllm_xargs"]
    assert last["lamps_session_end"] == 1 and "lamps_predicted_api_seconds" not in last
    # The stand-in's answers (ids 100...) are in the next turn's prompt after the first input.
    start = len(bodies[0]["prompt"])
    assert bodies[2]["prompt"][start : start + 16] == list(range(100, 116))
    # The conversations that failed get a 1-token session_end request, not measured.
    closing = [b for b, _ in stand_in_run["requests"] if b["max_tokens"] == 1]
    assert len(closing) == 2 and all(b["vllm_xargs"] == {"lamps_session_end": 1} for b in closing)
    assert stand_in_run["row"]["sessions_closed"] == 2


def test_interrupt_writes_what_it_has_without_vllm(tmp_path: Path) -> None:
    server = StandInServer(token_seconds=0.2)
    traces = three_traces(tmp_path / "t")
    argv = agents(server.url, traces, tmp_path / "out", "--users", "2", "--duration", "60",
                  "--no-plots")  # fmt: skip
    # A fresh interpreter in which vLLM and torch cannot be imported; cwd: not the source tree.
    # Ctrl-C is restored first: a test run started in the background (`cmd &` without job
    # control) hands its children SIGINT ignored, and the child would never see the signal.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "import sys; sys.modules['vllm'] = None; sys.modules['torch'] = None; "
            f"from lamps.cli import main; sys.exit(main({argv!r}))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(server.requests) >= 3, proc.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert row["interrupted"] is True and row["engine"] == "http" and row["url"] == server.url
    assert row["turns_done"] >= 1 and row["turns_cut"] >= 1
    assert row["turns_sent"] == row["turns_done"] + row["turns_failed"] + row["turns_cut"]
    assert "p95 TTFT s" in stdout


@pytest.mark.parametrize("module", ["aiohttp", "matplotlib"])
def test_a_missing_module_is_named_with_how_to_get_it(module: str, tmp_path: Path) -> None:
    argv = agents("http://127.0.0.1:9/v1", tmp_path, tmp_path / "out", "--users", "1")
    code = (f"import sys; sys.modules[{module!r}] = None; from lamps.cli import main; "
            f"sys.exit(main({argv!r}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"`lamps agents` needs module {module!r}: install" in done.stderr
    assert "Traceback" not in done.stderr


def test_append_keeps_the_earlier_commands(tmp_path: Path) -> None:
    from lamps.agents.command import earlier_commands

    path = tmp_path / "results.json"
    assert earlier_commands(path) == []
    path.write_text(json.dumps({"command": "lamps agents --label b", "rows": [],
                                "earlier_commands": ["lamps agents --label a"]}))  # fmt: skip
    assert earlier_commands(path) == ["lamps agents --label a", "lamps agents --label b"]


def test_a_bad_trace_gets_the_loaders_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lamps.cli import main

    broken = trace(extending(2))
    del broken["requests"][1]["in"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(SystemExit) as e:
        main(agents("http://127.0.0.1:9/v1", path, tmp_path / "out", "--users", "1"))
    assert e.value.code == 2
    assert f"{path}: requests[1]: missing field 'in'" in capsys.readouterr().err


def test_a_trace_too_long_for_the_server_names_the_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lamps.cli import main

    server = StandInServer(max_model_len=256)
    try:
        with pytest.raises(SystemExit) as e:
            main(agents(server.url, three_traces(tmp_path / "t"), tmp_path / "out",
                        "--users", "1"))  # fmt: skip
    finally:
        server.stop()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "max_model_len is 256: lower --scale to" in err and server.requests == []


# -- against vLLM's OpenAI server ----------------------------------------------------------------

SERVER_ARGS = ["--block-size", "32", "--max-model-len", "2048", "--max-num-seqs", "16",
               "--enforce-eager", "--dtype", "float32", "--seed", "0",
               "--enable-prompt-tokens-details", "--distributed-executor-backend", "uni",
               "--scheduler-cls", "lamps.vllm.LampsScheduler"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.requires_cpu_engine
def test_every_turn_completes_against_vllms_server(tmp_path: Path) -> None:
    from lamps.cli import main

    model = write_tiny_chat_tokenizer(write_tiny_llama(tmp_path / "model", max_len=2048))
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"}
    server = OpenAIServer(model, tmp_path / "server.log", SERVER_ARGS, env)
    traces = three_traces(tmp_path / "t", think=0.3)
    try:
        server.wait_ready(420)
        started = time.monotonic()
        argv = agents(server.url + "/v1", traces, tmp_path / "out", "--users", "2",
                      "--conversations", "3", "--duration", "120", "--label", "lamps")  # fmt: skip
        code = main(argv)
        took = time.monotonic() - started
        text = server.metrics()
    finally:
        server.stop()
    assert code == 0, server.tail()
    out = tmp_path / "out"
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    turns, convs = read_jsonl(out / "turns.jsonl"), read_jsonl(out / "conversations.jsonl")
    # Every turn of every conversation (3 users' conversations, 2 sub-agents) completed.
    assert len(convs) == 5 and all(c["status"] == "done" for c in convs)
    assert row["turns_done"] == sum(c["turns"] for c in convs) == 16 == len(turns)
    assert row["turns_failed"] == row["turns_cut"] == row["turns_unsent"] == 0
    # The server's own counts: the traced (scaled) prompt, exactly the traced output, and the
    # cached prompt tokens of every turn, a later turn finding its earlier turns' prefix.
    assert all(t["prompt_tokens"] == t["input_tokens"] for t in turns)
    assert all(t["output_tokens"] == t["expected_output_tokens"] for t in turns)
    assert all(t["cached_tokens"] is not None for t in turns)
    assert all(t["cached_tokens"] > 0 for t in turns if t["turn"] > 0)
    assert row["cached_tokens_reported"] and row["prefix_hit_rate"] > 0.5
    assert row["answer_tokens_spliced"] > 0 and row["engine"] == "http"
    # LAMPS saw every turn's hints and each conversation's session_end.
    assert metric(text, "lamps_hinted_total") == 16
    assert metric(text, "lamps_sessions_ended_total") == 5
    assert metric(text, "lamps_sessions") == 0 and row["sessions_closed"] == 0
    assert row["server_lamps_metrics"] is True
    assert row["server_counters"]["lamps_takeovers_total"] > 0
    print(f"\n16 turns against vLLM's server in {took:.1f} s: prefix hit rate "
          f"{row['prefix_hit_rate']:.3f}, mean TTFT {row['ttft_mean'] * 1e3:.0f} ms")  # fmt: skip
