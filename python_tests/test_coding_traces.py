"""kv-cache-tester traces: the loader, its errors, the token mapping, the shipped subset."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from coding_traces import extending, ids, request, subagent, trace, write

from lamps.replay.records import RequestRecord
from lamps.replay.traced_tokens import TracedTokens
from lamps.workloads import Arrival, load_trace
from lamps.workloads.coding import TracedConversation, TraceFormatError, parse_coding_trace
from lamps.workloads.coding_pack import PACKED_DIR, PACKED_FILE, choose, pack, unpack

SHARED = Path(__file__).resolve().parents[2] / "shared" / "workloads" / "claude-code" / "traces"


def _tokens(
    convs: list[TracedConversation], warm: float = 0.0
) -> tuple[TracedTokens, list[RequestRecord]]:
    tokens = TracedTokens(convs, warm_prefix=warm)
    recs = []
    for i, c in enumerate(convs):
        rec = RequestRecord(Arrival(i, 0.0, c))
        tokens.register(rec.arrival, scope=i)
        recs.append(rec)
    return tokens, recs


def _prompt(tokens: TracedTokens, rec: RequestRecord, k: int) -> np.ndarray:
    return np.array(tokens.prompt(rec, k))


def _output(tokens: TracedTokens, rec: RequestRecord, k: int) -> np.ndarray:
    rec.segment = k
    start = rec.arrival.request.turns[k].input_tokens
    n = rec.arrival.request.turns[k].output_tokens
    return np.array([tokens.sampled(rec, start + j) for j in range(n)])


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def test_inputs_share_exactly_as_their_hash_ids_agree() -> None:
    # Turn 1 extends turn 0 (its 3 blocks, its partial block, its answer); turn 2 keeps only
    # the first two blocks (a compaction); the last turn's answer is its own.
    conv = parse_coding_trace(
        trace(
            [
                request(200, 40, ids((1, 3))),
                request(330, 30, ids((1, 5))),
                request(300, 10, [1, 2, 90, 91]),
            ]
        )
    )
    tokens, (rec,) = _tokens([conv])
    t0, t1, t2 = (_prompt(tokens, rec, k) for k in range(3))
    assert (len(t0), len(t1), len(t2)) == (200, 330, 300)
    assert _common(t0, t1) == 200  # the partial block too: the next input extends it
    np.testing.assert_array_equal(_output(tokens, rec, 0), t1[200:240])  # the answer
    assert _common(t1, t2) == 2 * 64  # the id lists agree on two blocks, exactly
    out1 = _output(tokens, rec, 1)
    assert _common(np.concatenate([t1, out1]), t2) == 128  # turn 2 does not extend turn 1
    # The same trace replayed by another user shares nothing (local scope, no warm prefix).
    other = RequestRecord(Arrival(9, 0.0, conv))
    tokens.register(other.arrival, scope=9)
    assert _common(t0, _prompt(tokens, other, 0)) == 0


def test_warm_prefix_is_shared_across_conversations_and_optional() -> None:
    a = parse_coding_trace(trace(extending(2), "a", tool=200, system=56))  # 256 shared tokens
    b = parse_coding_trace(trace([request(300, 5, ids((7, 4)))], "b", tool=100, system=28))
    tokens, (ra, rb) = _tokens([a, b], warm=0.5)
    assert tokens.warm_tokens == 128  # half of the largest tool + system
    pa, pb = _prompt(tokens, ra, 0), _prompt(tokens, rb, 0)
    assert _common(pa, pb) == 128
    assert _common(_prompt(tokens, ra, 1), pb) == 128  # later turns keep it
    cold, (ca, cb) = _tokens([a, b], warm=0.0)
    assert _common(_prompt(cold, ca, 0), _prompt(cold, cb, 0)) == 0


def test_subagents_are_nested_conversations_spawned_before_the_next_turn() -> None:
    sub_a = subagent([request(150, 5, ids((50, 2))), request(220, 5, ids((50, 3)))], "a1")
    sub_b = subagent([request(150, 5, ids((50, 2)))], "a2")
    conv = parse_coding_trace(trace([request(200, 10), sub_a, sub_b, request(300, 10)], "p"))
    assert len(conv.turns) == 2
    assert [(k, [s.request_id for s in subs]) for k, subs in conv.spawns] == [(1, ["p/a1", "p/a2"])]
    assert conv.subagents_before(1)[0].turns[1].input_tokens == 220
    assert [c.request_id for c in conv.all_conversations()] == ["p", "p/a1", "p/a2"]


def test_gaps_after_a_person_are_capped_tool_calls_are_not() -> None:
    raw = trace(
        [
            request(200, 10, stop="end_turn"),
            request(300, 10, think=5000.0, stop="tool_use"),  # a person typed: capped
            request(400, 10, think=700.0),  # after tool_use: a tool call, as traced
        ]
    )
    conv = parse_coding_trace(raw, max_human_seconds=60.0)
    assert [(t.gap_kind, t.gap_seconds) for t in conv.turns] == [
        ("start", 0.0),
        ("human", 60.0),
        ("tool", 700.0),
    ]
    assert [s.api_seconds for s in conv.segments[:-1]] == [60.0, 700.0]
    capped = parse_coding_trace(raw, max_human_seconds=10.0, max_tool_seconds=30.0)
    assert [t.gap_seconds for t in capped.turns[1:]] == [10.0, 30.0]
    # No think_time: the time between the two requests, as kv-cache-tester falls back.
    del raw["requests"][2]["think_time"]
    raw["requests"][1]["t"], raw["requests"][2]["t"] = 10.0, 52.5
    assert parse_coding_trace(raw).turns[2].gap_seconds == 42.5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["requests"][1].pop("in"), r"requests\[1\]: missing field 'in'"),
        (lambda t: t["requests"][2].update(out=-3), r"requests\[2\]: field 'out' must be"),
        (lambda t: t["requests"][1]["hash_ids"].pop(), r"requests\[1\]: field 'hash_ids' has"),
        (
            lambda t: t["requests"][0].update(hash_ids=["a", "b", "c"]),
            r"requests\[0\]: field 'hash_ids' must be a list of integers",
        ),
        (lambda t: t.update(block_size=0), r"top level: field 'block_size' must be >= 1"),
        (lambda t: t.update(hash_id_scope="?"), r"top level: field 'hash_id_scope'"),
        (lambda t: t.update(requests=[]), r"top level: field 'requests' must be a non-empty"),
        (
            lambda t: t["requests"].insert(1, subagent([{"in": 5}])),
            r"requests\[1\]\.requests\[0\]: missing field 'out'",
        ),
        (
            lambda t: t["requests"].insert(0, subagent([request(100, 5)])),
            r"requests\[0\]: a sub-agent before the first request",
        ),
        (
            lambda t: t["requests"].insert(1, subagent([])),
            r"requests\[1\]: field 'requests' must be a non-empty list",
        ),
    ],
)
def test_bad_traces_name_the_file_the_field_and_the_request(
    tmp_path: Path, edit: object, message: str
) -> None:
    raw = trace(extending(3))
    edit(raw)  # type: ignore[operator]
    path = write(tmp_path, {"bad.json": raw}) / "bad.json"
    with pytest.raises(TraceFormatError, match=rf"{path}: {message}"):
        load_trace(path)


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    text = json.dumps(trace(extending(3)))
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    (tmp_path / "ok.json").write_text(text)
    with pytest.raises(TraceFormatError, match=r"cut\.json: not valid JSON, truncated\?"):
        load_trace(tmp_path)


def test_load_trace_detects_the_format(tmp_path: Path) -> None:
    write(tmp_path / "dir", {"a.json": trace(extending(2), "a"), "b.json": trace(extending(3))})
    workload = load_trace(tmp_path / "dir")
    assert [len(r.segments) for r in workload.requests] == [2, 3]
    assert all(isinstance(r, TracedConversation) for r in workload.requests)
    one = load_trace(tmp_path / "dir" / "b.json")
    assert len(one.requests) == 1
    assert not isinstance(load_trace("builtin:infercept-multi-api").requests[0], TracedConversation)


def test_the_shipped_subset_is_small_licensed_and_spans_the_set() -> None:
    folder = resources.files("lamps.data").joinpath(PACKED_DIR)
    data = folder.joinpath(PACKED_FILE).read_bytes()
    assert len(data) < 1_000_000
    assert "Apache License" in folder.joinpath("LICENSE").read_text()
    assert "callanjfox/kv-cache-tester" in folder.joinpath("NOTICE").read_text()
    workload = load_trace("builtin:claude-code")
    convs = workload.requests
    assert len(convs) == 40
    assert any(c.spawns for c in convs)  # type: ignore[attr-defined]
    largest = [max(t.input_tokens for t in c.turns) for c in convs]  # type: ignore[attr-defined]
    assert min(largest) < 40_000 and max(largest) > 120_000
    assert json.loads(gzip.decompress(data))["commit"] == "94f6046"


def test_a_set_no_larger_than_the_subset_is_taken_whole() -> None:
    # Fewer traces than quartiles left one empty (an IndexError); up to 40 the quartiles pick
    # every trace anyway.
    for n in (1, 2, 3, 5, 40):
        traces = {f"t{i:02}.json": trace(extending(1 + i % 4), str(i)) for i in range(n)}
        assert choose(traces) == sorted(traces)
    traces = {f"t{i:02}.json": trace(extending(1 + i % 7), str(i)) for i in range(41)}
    assert len(choose(traces)) <= 40


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared traces are not at {SHARED}")
def test_packing_round_trips_and_the_subset_is_the_documented_choice() -> None:
    traces = {f.name: json.loads(f.read_text()) for f in sorted(SHARED.glob("*.json"))}
    assert unpack(pack(traces)) == traces
    shipped = unpack(resources.files("lamps.data").joinpath(PACKED_DIR, PACKED_FILE).read_bytes())
    assert sorted(shipped) == choose(traces)
    assert all(shipped[n] == traces[n] for n in shipped)
