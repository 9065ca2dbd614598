"""The shipped subset of the Claude Code traces (``--trace builtin:claude-code``): choosing it,
packing it, reading it back.

The packed file holds the chosen traces unchanged except that each ``hash_ids`` list is
written as runs ``hash_runs: [[first_id, count], ...]`` of consecutive ids (a turn's ids are
mostly one run: 40 KB of gzip for 40 conversations instead of about 1.5 MB), which
``unpack`` expands back before the usual parser reads them; the licence and a NOTICE naming
the source travel beside it in ``lamps/data/claude_code/``.

The subset (``choose``): 40 conversations, stratified so that the replay sees the spread of
the full set: the traces are split into four quartiles of their largest input, and each
quartile gives 10 conversations evenly spaced in their number of requests (short and long
sessions of short and long contexts); every trace with sub-agents is kept (replacing the
nearest pick of its quartile). Forty is enough for 32 closed-loop users to start on distinct
conversations. ``lamps workloads pack-coding SRC_DIR OUT_FILE`` regenerates it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from lamps.workloads.coding import (
    DEFAULT_MAX_HUMAN_SECONDS,
    parse_coding_trace,
    read_json,
    trace_files,
)
from lamps.workloads.model import Workload

PACKED_DIR = "claude_code"
PACKED_FILE = "traces.json.gz"
SOURCE = "callanjfox/kv-cache-tester"
SOURCE_COMMIT = "94f6046"
SUBSET_SIZE = 40
QUARTILES = 4


def _runs(ids: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for x in ids:
        if out and x == out[-1][0] + out[-1][1]:
            out[-1][1] += 1
        else:
            out.append([x, 1])
    return out


def _map_requests(trace: Mapping[str, Any], fn: Any) -> dict[str, Any]:
    """``trace`` with ``fn`` applied to each request (sub-agents' requests included)."""
    out = dict(trace)
    out["requests"] = [
        _map_requests(r, fn) if r.get("type") == "subagent" else fn(dict(r))
        for r in trace["requests"]
    ]
    return out


def _pack_request(r: dict[str, Any]) -> dict[str, Any]:
    r["hash_runs"] = _runs(r.pop("hash_ids"))
    return r


def _unpack_request(r: dict[str, Any]) -> dict[str, Any]:
    runs = r.pop("hash_runs", None)
    if runs is not None:
        r["hash_ids"] = [first + i for first, count in runs for i in range(count)]
    return r


def pack(traces: Mapping[str, Any]) -> bytes:
    """The packed file's bytes for ``{file name: trace}`` (gzip, reproducible)."""
    body = {
        "version": 1,
        "source": SOURCE,
        "commit": SOURCE_COMMIT,
        "traces": {name: _map_requests(t, _pack_request) for name, t in sorted(traces.items())},
    }
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)


def unpack(data: bytes) -> dict[str, Any]:
    """``{file name: trace}`` of a packed file, in kv-cache-tester's own format."""
    body = json.loads(gzip.decompress(data))
    return {name: _map_requests(t, _unpack_request) for name, t in body["traces"].items()}


def _largest_input(trace: Mapping[str, Any]) -> int:
    largest: int = max(r["in"] for r in trace["requests"] if r.get("type") != "subagent")
    return largest


def choose(traces: Mapping[str, Any], size: int = SUBSET_SIZE) -> list[str]:
    """The file names of the stratified subset (see the module docstring); all of them when
    there are no more than ``size`` (what the quartiles pick then when ``size`` is a multiple of
    four; with fewer traces than quartiles one would be empty)."""
    if len(traces) <= size:
        return sorted(traces)
    names = sorted(traces, key=lambda n: (_largest_input(traces[n]), n))
    per = size // QUARTILES
    chosen: list[str] = []
    for q in range(QUARTILES):
        part = names[q * len(names) // QUARTILES : (q + 1) * len(names) // QUARTILES]
        part.sort(key=lambda n: (len(traces[n]["requests"]), n))
        picks = [part[round(i * (len(part) - 1) / max(per - 1, 1))] for i in range(per)]
        for n in part:
            if any(r.get("type") == "subagent" for r in traces[n]["requests"]) and n not in picks:
                rank = part.index(n)
                nearest = min(range(per), key=lambda i: abs(part.index(picks[i]) - rank))
                picks[nearest] = n
        chosen += picks
    return sorted(dict.fromkeys(chosen))


def load_builtin_coding(
    *, max_human_seconds: float = DEFAULT_MAX_HUMAN_SECONDS, max_tool_seconds: float | None = None
) -> Workload:
    """The shipped subset as a workload (``builtin:claude-code``)."""
    data = resources.files("lamps.data").joinpath(PACKED_DIR).joinpath(PACKED_FILE).read_bytes()
    convs = tuple(
        parse_coding_trace(
            t,
            f"builtin:claude-code/{name}",
            max_human_seconds=max_human_seconds,
            max_tool_seconds=max_tool_seconds,
        )
        for name, t in unpack(data).items()
    )
    return Workload("claude-code", convs)


def pack_dir(src: Path, out: Path) -> tuple[int, int]:
    """Chooses the subset of the traces in ``src`` and writes it packed to ``out``
    (``lamps workloads pack-coding SRC_DIR OUT_FILE``); returns (packed, read)."""
    traces = {f.name: read_json(f) for f in trace_files(src)}
    for name, trace in traces.items():
        parse_coding_trace(trace, name)  # a bad trace fails here, not once shipped
    subset = {n: traces[n] for n in choose(traces)}
    out.write_bytes(pack(subset))
    return len(subset), len(traces)
