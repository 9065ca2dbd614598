"""KV swap engine: copy one request's KV blocks to a host pool and back.

Two backends share one interface (`lamps._swap`, C++): ``"cpu"`` (the KV cache is host memory, as
with vLLM's CPU backend; copies run on two copier threads) and ``"cuda"`` (pinned host pool, one
non-blocking stream per direction, one event per layer). A request's host copy is created by
`SwapEngine.swap_out`, consumed by a finished `SwapEngine.swap_in`, or dropped by
`SwapEngine.release`; completions are collected with `SwapEngine.poll`, which never blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from lamps import _swap
from lamps._swap import (
    Completion,
    EngineStats,
    LayerSpec,
    PoolExhaustedError,
    SwapError,
    UnknownRequestError,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "Completion",
    "EngineStats",
    "LayerSpec",
    "PoolExhaustedError",
    "SwapEngine",
    "SwapError",
    "UnknownRequestError",
    "available_backends",
    "backend_status",
    "layer_spec",
]


class _TensorLike(Protocol):
    """What the engine needs to know about a KV cache tensor (a `torch.Tensor`)."""

    @property
    def shape(self) -> Sequence[int]: ...

    def stride(self) -> tuple[int, ...]: ...

    def data_ptr(self) -> int: ...

    def element_size(self) -> int: ...


def backend_status() -> dict[str, str | None]:
    """Each backend mapped to None when usable, else to the reason it is not."""
    built, usable, reason = _swap.cuda_status()
    return {"cpu": None, "cuda": None if built and usable else reason}


def available_backends() -> list[str]:
    """Backends usable in this process: always "cpu"; "cuda" when built and a GPU is usable."""
    return [name for name, reason in backend_status().items() if reason is None]


def layer_spec(
    tensor: _TensorLike, *, num_blocks: int | None = None, block_dim: int | None = None
) -> LayerSpec:
    """Describe where each block of one layer's KV cache tensor lives.

    The block dimension is `block_dim`; when omitted it is dim 0, or dim 1 when only dim 1 has
    `num_blocks` entries (the kv-major ``(2, num_blocks, ...)`` shape). A block's bytes may be
    contiguous (block-major layouts: vLLM's ``[B, H, N, C]`` views, FlashInfer's
    ``(num_blocks, 2, ...)``) or one level of equal fragments (kv-major, head-outer
    ``[H, B, ...]``).
    """
    shape = [int(s) for s in tensor.shape]
    strides = [int(s) for s in tensor.stride()]
    if not shape:
        raise ValueError("tensor: a KV cache tensor must have a block dimension (got a scalar)")
    if block_dim is None:
        block_dim = 0
        if num_blocks is not None and shape[0] != num_blocks:
            if len(shape) > 1 and shape[1] == num_blocks:
                block_dim = 1
            else:
                raise ValueError(
                    f"num_blocks: no leading dimension of shape {tuple(shape)} has {num_blocks}"
                )
    if not 0 <= block_dim < len(shape):
        raise ValueError(f"block_dim: {block_dim} is out of range for shape {tuple(shape)}")
    if num_blocks is not None and shape[block_dim] != num_blocks:
        raise ValueError(
            f"num_blocks: dim {block_dim} of shape {tuple(shape)} has {shape[block_dim]} entries, "
            f"not {num_blocks}"
        )
    rest = [
        (size, stride)
        for dim, (size, stride) in enumerate(zip(shape, strides, strict=True))
        if dim != block_dim and size != 1
    ]
    if any(stride <= 0 for _, stride in rest) or strides[block_dim] <= 0:
        raise ValueError(f"tensor: strides {tuple(strides)} must be positive (no broadcast views)")
    # Bytes are copied as they lie in memory, so only the physical order of the dims matters
    # (LBNHC stores [N, H, C] inside a block: permuted, but still one dense run).
    rest.sort(key=lambda dim: dim[1], reverse=True)
    # Dense innermost dims form one run; what is left must be a single stride progression.
    run_elems = 1
    while rest and rest[-1][1] == run_elems:
        run_elems *= rest.pop()[0]
    num_runs, run_stride = 1, 0
    if rest:
        merged = [rest[0]]
        for size, stride in rest[1:]:
            outer_size, outer_stride = merged[-1]
            if outer_stride == stride * size:
                merged[-1] = (outer_size * size, stride)
            else:
                merged.append((size, stride))
        if len(merged) > 1:
            raise ValueError(
                f"tensor: layout shape={tuple(shape)} stride={tuple(strides)} splits a block into "
                "more than one level of fragments, which the swap engine does not support"
            )
        num_runs, run_stride = merged[0]
    item = int(tensor.element_size())
    return LayerSpec(
        base=int(tensor.data_ptr()),
        num_blocks=shape[block_dim],
        block_stride=strides[block_dim] * item,
        run_bytes=run_elems * item,
        num_runs=num_runs,
        run_stride=run_stride * item,
    )


def _device_type(tensor: _TensorLike) -> str:
    device = getattr(tensor, "device", None)
    return getattr(device, "type", "cpu")


class SwapEngine:
    """A swap engine over a model's KV cache tensors (one per layer)."""

    def __init__(
        self,
        kv_caches: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        num_host_blocks: int,
        *,
        backend: str = "auto",
        num_blocks: int | None = None,
        block_dim: int | None = None,
    ) -> None:
        named = (
            dict(kv_caches)
            if isinstance(kv_caches, Mapping)
            else {str(i): t for i, t in enumerate(kv_caches)}
        )
        if not named:
            raise ValueError("kv_caches: no KV cache tensors given")
        if not isinstance(num_host_blocks, int) or num_host_blocks <= 0:
            raise ValueError(f"num_host_blocks: must be a positive int (got {num_host_blocks!r})")
        devices = {_device_type(t) for t in named.values()}
        if len(devices) != 1:
            raise ValueError(f"kv_caches: tensors are on several device types {sorted(devices)}")
        device = devices.pop()
        if backend == "auto":
            backend = "cuda" if device == "cuda" else "cpu"
        if backend not in ("cpu", "cuda"):
            raise ValueError(f"backend: must be 'auto', 'cpu' or 'cuda' (got {backend!r})")
        expected_device = "cuda" if backend == "cuda" else "cpu"
        if device != expected_device:
            raise ValueError(
                f"backend: the {backend!r} backend needs {expected_device} tensors, got {device}"
            )
        # Layers sharing one cache (cross-layer KV sharing) are copied once.
        self._layer_index: dict[str, int] = {}
        specs: list[LayerSpec] = []
        seen: dict[tuple[int, int, int, int, int], int] = {}
        for name, tensor in named.items():
            spec = layer_spec(tensor, num_blocks=num_blocks, block_dim=block_dim)
            key = (spec.base, spec.block_stride, spec.run_bytes, spec.num_runs, spec.run_stride)
            if key not in seen:
                seen[key] = len(specs)
                specs.append(spec)
            self._layer_index[name] = seen[key]
        # The engine copies through raw addresses, so it owns the tensors (`memory_owner`) and
        # releases them only after its copies have stopped; a reference held here could be
        # dropped first when this object is collected, freeing memory a copier still touches.
        self._tensors = list(named.values())
        owner = tuple(self._tensors)
        self._backend = backend
        if backend == "cuda":
            reason = backend_status()["cuda"]
            if reason is not None:
                raise SwapError(reason)
            index = getattr(next(iter(named.values())).device, "index", None)
            self._engine = _swap.make_cuda_engine(specs, num_host_blocks, index or 0, owner)
        else:
            self._engine = _swap.CpuSwapEngine(specs, num_host_blocks, owner)

    @property
    def backend(self) -> str:
        """ "cpu" or "cuda"."""
        return self._backend

    @property
    def num_layers(self) -> int:
        """Distinct layer caches the engine copies (shared caches count once)."""
        return self._engine.num_layers

    @property
    def num_host_blocks(self) -> int:
        """Capacity of the host pool in blocks."""
        return self._engine.num_host_blocks

    @property
    def num_free_host_blocks(self) -> int:
        """Host blocks not holding (or about to hold) a request's KV."""
        return self._engine.num_free_host_blocks

    @property
    def host_block_bytes(self) -> int:
        """Bytes of one host block: one device block of every layer."""
        return self._engine.host_block_bytes

    @property
    def num_in_flight(self) -> int:
        """Transfers submitted and not yet reported finished."""
        return self._engine.num_in_flight

    def layer_index(self, layer: int | str) -> int:
        """The engine's index of a layer given by name or index."""
        if isinstance(layer, str):
            try:
                return self._layer_index[layer]
            except KeyError:
                raise KeyError(f"layer: unknown layer name {layer!r}") from None
        return layer

    def _stream(self, stream: int | None) -> int:
        if stream is not None:
            return stream
        if self._backend != "cuda":
            return 0
        import torch

        return int(torch.cuda.current_stream(self._tensors[0].device).cuda_stream)

    def swap_out(
        self, request_id: str, block_ids: Sequence[int], stream: int | None = None
    ) -> None:
        """Start copying the request's blocks (in order) to newly allocated host blocks."""
        self._engine.swap_out(request_id, list(block_ids), self._stream(stream))

    def swap_in(
        self,
        request_id: str,
        block_ids: Sequence[int],
        first_block: int = 0,
        stream: int | None = None,
    ) -> None:
        """Start copying stored blocks [first_block, first_block + len(block_ids)) to block_ids."""
        self._engine.swap_in(request_id, list(block_ids), first_block, self._stream(stream))

    def poll(self) -> list[Completion]:
        """Transfers finished since the last call (never blocks)."""
        return self._engine.poll()

    def layer_ready(self, request_id: str, layer: int | str) -> bool:
        """Whether the layer's copy of the request's in-flight transfer has landed."""
        return self._engine.layer_ready(request_id, self.layer_index(layer))

    def wait_layer(self, request_id: str, layer: int | str, stream: int | None = None) -> None:
        """Wait for one layer's copy (on CUDA with a stream: make the stream wait, not the host)."""
        self._engine.wait_layer(request_id, self.layer_index(layer), stream or 0)

    def wait(self, request_id: str) -> None:
        """Block until the request's in-flight transfer (if any) has ended."""
        self._engine.wait(request_id)

    def abort(self, request_id: str) -> bool:
        """Stop the request's in-flight transfer; False when none was in flight."""
        return self._engine.abort(request_id)

    def release(self, request_id: str) -> bool:
        """Drop the request's host copy (aborting its transfer); False when none was held."""
        return self._engine.release(request_id)

    def stored_blocks(self, request_id: str) -> int:
        """Blocks in the request's host copy (0 when none)."""
        return self._engine.stored_blocks(request_id)

    def has_copy(self, request_id: str) -> bool:
        """Whether the request has a complete host copy."""
        return self._engine.has_copy(request_id)

    def in_flight(self, request_id: str) -> bool:
        """Whether the request has a transfer in flight."""
        return self._engine.in_flight(request_id)

    def stats(self) -> EngineStats:
        """Counters since construction (bytes moved, copy calls, failures, aborts)."""
        return self._engine.stats()

    def set_paused(self, paused: bool) -> None:
        """CPU backend only: hold the copiers before their next layer (deterministic tests)."""
        if not isinstance(self._engine, _swap.CpuSwapEngine):
            raise SwapError("set_paused is only available on the cpu backend")
        self._engine.set_paused(paused)
