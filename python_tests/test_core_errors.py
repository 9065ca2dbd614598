"""Bad input raises a clear Python exception naming the field, never a crash."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import lamps
from lamps import _swap

NAN, INF = math.nan, math.inf
GPTJ = lamps.CostModel.profile("gptj-6b-a100")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((NAN, 1, 1, 1), "a_ms_per_token"),
        ((-0.1, 1, 1, 1), "a_ms_per_token"),
        ((1, -1, 1, 1), "c_ms"),
        ((1, 1, 0, 1), "kv_bytes_per_token"),
        ((1, 1, 1, INF), "link_bytes_per_second"),
    ],
)
def test_cost_model_rejects_out_of_range_coefficients(args: tuple, field: str) -> None:
    """Each bad coefficient is named."""
    with pytest.raises(ValueError, match=field):
        lamps.CostModel(*args)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0.04, 1e307, 1e5, 1e10), "c_ms"),
        ((1e300, 10, 1e5, 1e10), "a_ms_per_token"),
        ((0.04, 10, 1e300, 1e-3), "kv_bytes_per_token / link_bytes_per_second"),
        ((0.04, 10, 1e5, 1e-300), "kv_bytes_per_token / link_bytes_per_second"),
    ],
)
def test_cost_model_rejects_coefficients_that_cannot_give_finite_scores(
    args: tuple, field: str
) -> None:
    """Regression: c_ms=1e307 was accepted, then every score overflowed to infinity."""
    with pytest.raises(ValueError, match=f"{field} must be"):
        lamps.CostModel(*args)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prefill_ms_per_token_pair": -1e-6}, "prefill_ms_per_token_pair must be >= 0"),
        ({"prefill_ms_per_token_pair": 1e250}, "prefill_ms_per_token_pair must be <="),
        ({"kv_read_ms_per_token": NAN}, "kv_read_ms_per_token must be finite"),
        ({"kv_read_ms_per_token": 1e260}, "kv_read_ms_per_token must be <="),
    ],
)
def test_cost_model_rejects_bad_attention_coefficients(kwargs: dict, field: str) -> None:
    """The attention coefficients are checked like the others, and named."""
    with pytest.raises(ValueError, match=field):
        lamps.CostModel(0.04, 10, 1e5, 1e10, **kwargs)


def test_cost_model_refuses_an_unknown_profile() -> None:
    """A profile that does not exist is refused, naming it."""
    with pytest.raises(ValueError, match="unknown cost-model profile 'nope'"):
        lamps.CostModel.profile("nope")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"context_tokens": NAN}, "context_tokens"),
        ({"context_tokens": 10, "cached_tokens": -1}, "cached_tokens"),
        ({"context_tokens": 10, "cached_tokens": 11}, "cached_tokens"),
        ({"context_tokens": 10, "api_seconds": INF}, "api_seconds"),
        ({"context_tokens": 10, "api_seconds": -2}, "api_seconds"),
    ],
)
def test_paused_request_rejects_bad_predictions(kwargs: dict, field: str) -> None:
    """NaN, infinite or negative predictions name their field."""
    with pytest.raises(ValueError, match=field):
        lamps.PausedRequest(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"output_tokens": NAN}, "output_tokens"),
        ({"output_tokens": 1, "api_seconds": -1}, "api_seconds"),
        ({"output_tokens": 1, "return_tokens": INF}, "return_tokens"),
    ],
)
def test_segment_rejects_bad_predictions(kwargs: dict, field: str) -> None:
    """Segment fields are validated at construction."""
    with pytest.raises(ValueError, match=field):
        lamps.Segment(**kwargs)


def test_batch_state_rejects_bad_values() -> None:
    """Negative tokens, hit fractions outside [0, 1] and budgets below one token are refused."""
    with pytest.raises(ValueError, match="running_context_tokens"):
        lamps.BatchState(token_budget=1, running_context_tokens=-5)
    with pytest.raises(ValueError, match="prefix_cache_hit_fraction"):
        lamps.BatchState(token_budget=1, prefix_cache_hit_fraction=1.5)
    with pytest.raises(ValueError, match="token_budget must be in"):
        lamps.BatchState(token_budget=0)
    with pytest.raises(ValueError, match="iteration_seconds"):
        lamps.BatchState(token_budget=1, iteration_seconds=-1)
    with pytest.raises(ValueError, match="swap_queue_seconds"):
        lamps.BatchState(token_budget=1, swap_queue_seconds=INF)
    with pytest.raises(TypeError):
        lamps.BatchState()  # type: ignore[call-arg]  # the budget is the scheduler's, no default


def test_score_request_rejects_more_pending_than_context() -> None:
    """pending_prefill_tokens cannot exceed context_tokens."""
    with pytest.raises(ValueError, match="pending_prefill_tokens"):
        lamps.score_request(5, 6, [], lamps.BatchState(token_budget=2048), GPTJ)


def _columns(**override: np.ndarray) -> dict[str, np.ndarray]:
    cols = {
        "context_tokens": np.array([10, 20], dtype=np.int64),
        "pending_prefill_tokens": np.zeros(2, dtype=np.int64),
        "segment_offsets": np.array([0, 1, 2], dtype=np.int64),
        "output_tokens": np.array([5, 6], dtype=np.int64),
        "api_seconds": np.array([1.0, 0.0]),
        "return_tokens": np.array([2, 0], dtype=np.int64),
        "strategy": np.array([-1, -1], dtype=np.int8),
    }
    cols.update(override)
    return cols


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ({"api_seconds": np.array([NAN, 0.0])}, ValueError, r"api_seconds\[0\] must be finite"),
        ({"api_seconds": np.array([0.0, INF])}, ValueError, r"api_seconds\[1\]"),
        ({"output_tokens": np.array([5, -6], dtype=np.int64)}, ValueError, r"output_tokens\[1\]"),
        ({"strategy": np.array([3, -1], dtype=np.int8)}, ValueError, r"strategy\[0\]"),
        ({"segment_offsets": np.array([0, 2, 1], dtype=np.int64)}, ValueError, "segment_offsets"),
        ({"segment_offsets": np.array([0, 1, 5], dtype=np.int64)}, ValueError, "segment_offsets"),
        (
            {"pending_prefill_tokens": np.array([11, 0], dtype=np.int64)},
            ValueError,
            "pending_prefill",
        ),
        (
            {"context_tokens": np.array([10.0, 20.0])},
            TypeError,
            "context_tokens must be a numpy array of dtype int64",
        ),
        (
            {"return_tokens": np.array([2], dtype=np.int64)},
            ValueError,
            "return_tokens must have length 2",
        ),
        ({"strategy": np.zeros((2, 1), dtype=np.int8)}, TypeError, "strategy must be a 1-D"),
    ],
)
def test_score_batch_names_the_bad_column(override: dict, error: type, message: str) -> None:
    """Bad columns raise before anything is written, naming column and index."""
    with pytest.raises(error, match=message):
        lamps.score_batch(
            **_columns(**override), batch=lamps.BatchState(token_budget=2048), cost=GPTJ
        )


def test_score_batch_rejects_a_read_only_out() -> None:
    """A read-only `out` array is refused rather than written through."""
    out = np.zeros(2)
    out.flags.writeable = False
    with pytest.raises(TypeError, match="writeable"):
        lamps.score_batch(
            **_columns(), batch=lamps.BatchState(token_budget=2048), cost=GPTJ, out=out
        )


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (np.zeros(2, dtype=np.float32), "out must be a numpy array of dtype float64"),
        (np.zeros(2, dtype=np.int64), "out must be a numpy array of dtype float64"),
        (np.zeros(3), "out must have length 2"),
        (np.zeros((2, 1)), "out must be a 1-D C-contiguous array"),
        (np.zeros(4)[::2], "out must be a 1-D C-contiguous array"),
        ([0.0, 0.0], r"out must be a numpy array of dtype float64 \(got list\)"),
    ],
    ids=["float32", "int64", "length", "2-D", "strided", "list"],
)
def test_score_batch_refuses_an_out_it_cannot_write_in_place(out: object, message: str) -> None:
    """Regression: a float32 `out` was converted and the scores written into the temporary."""
    with pytest.raises(TypeError, match=message):
        lamps.score_batch(
            **_columns(), batch=lamps.BatchState(token_budget=2048), cost=GPTJ, out=out
        )


@pytest.mark.parametrize("column", list(_columns()))
def test_score_batch_reads_only_numpy_arrays_in_place(column: str) -> None:
    """A list is not converted behind the caller's back: the column is named."""
    columns = _columns()
    columns[column] = columns[column].tolist()
    with pytest.raises(
        TypeError, match=rf"{column} must be a numpy array of dtype \w+ \(got list\)"
    ):
        lamps.score_batch(**columns, batch=lamps.BatchState(token_budget=2048), cost=GPTJ)


def test_update_many_reads_only_numpy_arrays_in_place() -> None:
    """Handles and scores must be int64 and float64 arrays, not lists."""
    q = lamps.RankingQueue()
    q.push(0, 1.0, 0.0)
    with pytest.raises(
        TypeError, match=r"handles must be a numpy array of dtype int64 \(got list\)"
    ):
        q.update_many([0], np.array([2.0]))
    with pytest.raises(
        TypeError, match=r"scores must be a numpy array of dtype float64 \(got list\)"
    ):
        q.update_many(np.array([0]), [2.0])
    assert q.score(0) == 1.0


def test_queue_errors() -> None:
    """Empty pops, unknown and duplicate handles, bad scores and bad handles."""
    q = lamps.RankingQueue()
    with pytest.raises(IndexError, match="empty"):
        q.pop()
    with pytest.raises(IndexError, match="empty"):
        q.peek()
    with pytest.raises(KeyError, match="handle 3 is not queued"):
        q.erase(3)
    with pytest.raises(KeyError, match="handle 3"):
        q.update(3, 1.0)
    with pytest.raises(KeyError, match="handle 3"):
        q.is_promoted(3)
    with pytest.raises(ValueError, match="handle must be in"):
        q.push(-1, 1.0, 0.0)
    with pytest.raises(ValueError, match="handle must be in"):
        q.push(lamps.RankingQueue.max_handle + 1, 1.0, 0.0)
    with pytest.raises(ValueError, match="score must be finite"):
        q.push(1, NAN, 0.0)
    with pytest.raises(ValueError, match="arrival must be finite"):
        q.push(1, 1.0, INF)
    q.push(1, 1.0, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        q.push(1, 2.0, 0.0)
    with pytest.raises(ValueError, match="score must be finite"):
        q.update(1, INF)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        q.tick(-1)
    with pytest.raises(ValueError, match="starvation_threshold must be >= 0"):
        lamps.RankingQueue(-5)


def test_update_many_is_all_or_nothing() -> None:
    """A bad element in a bulk re-key leaves every score as it was."""
    q = lamps.RankingQueue()
    q.push(0, 1.0, 0.0)
    q.push(1, 2.0, 0.0)
    with pytest.raises(KeyError, match="handle 7"):
        q.update_many(np.array([0, 7], dtype=np.int64), np.array([9.0, 9.0]))
    with pytest.raises(ValueError, match=r"scores\[1\] must be finite"):
        q.update_many(np.array([0, 1], dtype=np.int64), np.array([9.0, NAN]))
    with pytest.raises(TypeError, match="handles must be a numpy array of dtype int64"):
        q.update_many(np.array([0.0]), np.array([9.0]))
    assert (q.score(0), q.score(1)) == (1.0, 2.0)


_QUEUE = lamps.RankingQueue()
_QUEUE.push(1, 1.0, 0.0)
_REQUEST = lamps.PausedRequest(10)
_BATCH = lamps.BatchState(token_budget=2048)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lamps.Segment("x"), "output_tokens: expected a number, got str"),
        (lambda: lamps.Segment(1, strategy=2), "strategy: expected Strategy, got int"),
        (lambda: lamps.RankingQueue("a"), "starvation_threshold: expected an integer, got str"),
        (lambda: lamps.PausedRequest(context_tokens=None), "context_tokens: expected a number"),
        (lambda: lamps.PausedRequest(1, "0"), "cached_tokens: expected a number, got str"),
        (
            lambda: lamps.BatchState(token_budget=1, running_tokens_per_iteration="x"),
            "running_tokens_per_iteration: expected a number",
        ),
        (lambda: lamps.CostModel("a", 1, 1, 1), "a_ms_per_token: expected a number, got str"),
        (lambda: lamps.CostModel(1, 1, 1, 10**400), "link_bytes_per_second: expected a number"),
        (
            lambda: lamps.CostModel(1, 1, 1, 1, prefill_ms_per_token_pair="x"),
            "prefill_ms_per_token_pair: expected a number",
        ),
        (lambda: lamps.CostModel(1, 1, 1, 1, name=3), "name: expected a str, got int"),
        (lambda: lamps.CostModel.profile(3), "name: expected a str, got int"),
        (lambda: GPTJ.iteration_seconds("x"), "tokens: expected a number, got str"),
        (lambda: GPTJ.swap_seconds(None), "tokens: expected a number, got NoneType"),
        (lambda: lamps.preserve_waste(None, _BATCH, GPTJ), "request: expected PausedRequest"),
        (lambda: lamps.discard_waste(_REQUEST, "b", GPTJ), "batch: expected BatchState, got str"),
        (lambda: lamps.swap_waste(_REQUEST, _BATCH, "c"), "cost: expected CostModel, got str"),
        (lambda: lamps.choose_strategy(_REQUEST, _BATCH, GPTJ, "x"), "allow_swap: expected a bool"),
        (lambda: lamps.infercept_should_discard(_BATCH, _BATCH, GPTJ), "request: expected Paused"),
        (lambda: lamps.infercept_swap_budget_tokens(_BATCH, None), "cost: expected CostModel"),
        (lambda: lamps.score_request("x", 0, [], _BATCH, GPTJ), "context_tokens: expected a num"),
        (
            lambda: lamps.score_request(1, 0, [lamps.Segment(1), "s"], _BATCH, GPTJ),
            r"segments\[1\]: expected Segment, got str",
        ),
        (
            lambda: lamps.score_request(1, 0, 5, _BATCH, GPTJ),
            "segments: expected a sequence of Segment, got int",
        ),
        (
            lambda: lamps.score_batch(**_columns(), batch="b", cost=GPTJ),
            "batch: expected BatchState, got str",
        ),
        (
            lambda: lamps.score_batch(**_columns(), batch=_BATCH, cost=GPTJ, allow_swap="x"),
            "allow_swap: expected a bool, got str",
        ),
        (lambda: _QUEUE.push("h", 1.0, 0.0), "handle: expected an integer, got str"),
        (lambda: _QUEUE.push(2**64, 1.0, 0.0), r"handle: expected an integer in \[-9223"),
        (lambda: _QUEUE.push(2, "s", 0.0), "score: expected a number, got str"),
        (lambda: _QUEUE.push(2, 1.0, None), "arrival: expected a number, got NoneType"),
        (lambda: _QUEUE.push(2, 1.0, 0.0, 1.5), "waiting_since: expected an integer, got float"),
        (lambda: _QUEUE.push(2, 1.0, 0.0, None, "x"), "promoted: expected a bool, got str"),
        (lambda: _QUEUE.erase("h"), "handle: expected an integer, got str"),
        (lambda: _QUEUE.update(1, "x"), "score: expected a number, got str"),
        (lambda: _QUEUE.tick("x"), "iterations: expected an integer, got str"),
        (lambda: _QUEUE.is_promoted(None), "handle: expected an integer, got NoneType"),
        (lambda: _QUEUE.score(1.0), "handle: expected an integer, got float"),
        (lambda: _QUEUE.waiting_since("1"), "handle: expected an integer, got str"),
        (lambda: "h" in _QUEUE, "handle: expected an integer, got str"),
    ],
)
def test_core_type_errors_name_the_argument(call: Callable[[], object], message: str) -> None:
    """Regression: pybind11's TypeError only printed the signature, naming no argument."""
    with pytest.raises(TypeError, match=message):
        call()


@pytest.fixture(scope="module")
def swap_engine() -> Iterator[_swap.CpuSwapEngine]:
    """A CPU swap engine over an 8-block numpy "KV cache" of 64-byte blocks."""
    cache = np.zeros(8 * 64, dtype=np.uint8)
    spec = _swap.LayerSpec(cache.ctypes.data, 8, 64, 64)
    yield _swap.CpuSwapEngine([spec], 4, cache)


def _spec() -> _swap.LayerSpec:
    return _swap.LayerSpec(0x1000, 8, 64, 64)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: _swap.LayerSpec("x", 8, 64, 64), "base: expected a non-negative integer"),
        (lambda e: _swap.LayerSpec(-1, 8, 64, 64), r"base: expected a non-negative integer in"),
        (lambda e: _swap.LayerSpec(1, 8.0, 64, 64), "num_blocks: expected an integer, got float"),
        (lambda e: _swap.LayerSpec(1, 8, 64, 64, run_stride="0"), "run_stride: expected an int"),
        (lambda e: _swap.CpuSwapEngine("layers", 4), "layers: expected a sequence of LayerSpec"),
        (
            lambda e: _swap.CpuSwapEngine([_spec(), "x"], 4),
            r"layers\[1\]: expected LayerSpec, got str",
        ),
        (lambda e: _swap.CpuSwapEngine([_spec()], "4"), "num_host_blocks: expected an integer"),
        (lambda e: _swap.make_cuda_engine(None, 4), "layers: expected a sequence of LayerSpec"),
        (lambda e: _swap.make_cuda_engine([], 4, "0"), "device: expected an integer, got str"),
        (lambda e: e.swap_out(1, [0]), "request_id: expected a str, got int"),
        (lambda e: e.swap_out("r", 0), "device_blocks: expected a sequence of integers, got int"),
        (lambda e: e.swap_out("r", [0, "1"]), r"device_blocks\[1\]: expected an integer, got str"),
        (lambda e: e.swap_out("r", [0], stream=-1), "stream: expected a non-negative integer"),
        (lambda e: e.swap_in("r", [0], "0"), "first_block: expected an integer, got str"),
        (lambda e: e.swap_in(None, [0]), "request_id: expected a str, got NoneType"),
        (lambda e: e.layer_ready("r", "0"), "layer: expected an integer, got str"),
        (lambda e: e.wait_layer("r", 0, "s"), "stream: expected a non-negative integer, got str"),
        (lambda e: e.wait(b"r"), "request_id: expected a str, got bytes"),
        (lambda e: e.abort(1), "request_id: expected a str, got int"),
        (lambda e: e.release(1), "request_id: expected a str, got int"),
        (lambda e: e.stored_blocks(1), "request_id: expected a str, got int"),
        (lambda e: e.has_copy(1), "request_id: expected a str, got int"),
        (lambda e: e.in_flight(1), "request_id: expected a str, got int"),
        (lambda e: e.set_paused("yes"), "paused: expected a bool, got str"),
    ],
)
def test_swap_type_errors_name_the_argument(
    swap_engine: _swap.CpuSwapEngine,
    call: Callable[[_swap.CpuSwapEngine], object],
    message: str,
) -> None:
    """Regression: the same for lamps._swap; nothing is queued by a refused call."""
    with pytest.raises(TypeError, match=message):
        call(swap_engine)
    assert swap_engine.num_in_flight == 0
    assert swap_engine.num_free_host_blocks == 4
