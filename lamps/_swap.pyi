"""Type stubs of the KV swap engine extension (csrc/swap/bindings.cpp).

Use it through `lamps.swap`, which derives the layer specs from KV cache tensors.
"""

from collections.abc import Sequence
from typing import Literal

__version__: str

class SwapError(RuntimeError):
    """The engine's state errors: a request already has a copy or a transfer in flight, ..."""

class PoolExhaustedError(MemoryError):
    """The host pool has fewer free blocks than a swap-out needs; nothing was allocated."""

class UnknownRequestError(KeyError):
    """A request id the engine holds nothing for."""

class LayerSpec:
    """Where one layer's KV cache lives and how a block is laid out in it.

    A block is `num_runs` fragments of `run_bytes` each, `run_stride` bytes apart; block b
    starts at base + b * block_stride.
    """

    def __init__(
        self,
        base: int,
        num_blocks: int,
        block_stride: int,
        run_bytes: int,
        num_runs: int = 1,
        run_stride: int = 0,
    ) -> None: ...
    @property
    def base(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def block_stride(self) -> int: ...
    @property
    def run_bytes(self) -> int: ...
    @property
    def num_runs(self) -> int: ...
    @property
    def run_stride(self) -> int: ...
    @property
    def block_bytes(self) -> int:
        """num_runs * run_bytes."""

class Completion:
    """One finished transfer, as `SwapEngine.poll` reports it."""

    @property
    def request_id(self) -> str: ...
    @property
    def direction(self) -> Literal["out", "in"]: ...
    @property
    def status(self) -> Literal["pending", "done", "failed", "aborted"]: ...
    @property
    def error(self) -> str:
        """Why the transfer failed ("" unless status is "failed")."""

class EngineStats:
    """Counters since the engine was constructed."""

    @property
    def swap_outs(self) -> int: ...
    @property
    def swap_ins(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def aborted(self) -> int: ...
    @property
    def copy_calls(self) -> int: ...

class SwapEngine:
    """The request-keyed engine (not constructible: `CpuSwapEngine` or `make_cuda_engine`)."""

    @property
    def backend(self) -> Literal["cpu", "cuda"]: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def num_host_blocks(self) -> int: ...
    @property
    def num_free_host_blocks(self) -> int: ...
    @property
    def host_block_bytes(self) -> int: ...
    @property
    def layers(self) -> list[LayerSpec]: ...
    @property
    def num_in_flight(self) -> int: ...
    def swap_out(self, request_id: str, device_blocks: Sequence[int], stream: int = 0) -> None:
        """Start copying the blocks (in order) to newly allocated host blocks."""
    def swap_in(
        self, request_id: str, device_blocks: Sequence[int], first_block: int = 0, stream: int = 0
    ) -> None:
        """Start copying stored blocks [first_block, first_block + n) into device_blocks."""
    def poll(self) -> list[Completion]:
        """Transfers finished since the last call (never blocks)."""
    def layer_ready(self, request_id: str, layer: int) -> bool:
        """Whether the layer of the request's in-flight transfer has landed."""
    def wait_layer(self, request_id: str, layer: int, stream: int = 0) -> None:
        """Wait for one layer (on CUDA with a stream: make the stream wait, not the host)."""
    def wait(self, request_id: str) -> None:
        """Block until the request's in-flight transfer (if any) has ended."""
    def abort(self, request_id: str) -> bool:
        """Stop the request's in-flight transfer; False when none was in flight."""
    def release(self, request_id: str) -> bool:
        """Drop the request's host copy (aborting its transfer); False when none was held."""
    def stored_blocks(self, request_id: str) -> int:
        """Blocks in the request's host copy (0 when none)."""
    def has_copy(self, request_id: str) -> bool:
        """Whether the request has a complete host copy."""
    def in_flight(self, request_id: str) -> bool:
        """Whether the request has a transfer in flight."""
    def stats(self) -> EngineStats: ...

class CpuSwapEngine(SwapEngine):
    """The CPU backend: the KV cache is host memory too; two copier threads.

    `memory_owner` (e.g. the KV cache tensors) is kept alive until the copiers have stopped.
    """

    def __init__(
        self, layers: Sequence[LayerSpec], num_host_blocks: int, memory_owner: object = None
    ) -> None: ...
    def set_paused(self, paused: bool) -> None:
        """Hold both copiers before their next layer (True) or let them go (False)."""

def make_cuda_engine(
    layers: Sequence[LayerSpec], num_host_blocks: int, device: int = 0, memory_owner: object = None
) -> SwapEngine:
    """The CUDA backend on `device`; `memory_owner` is kept alive until its copies have ended.

    Raises SwapError when the backend is not built or no device is usable.
    """

def cuda_status() -> tuple[bool, bool, str]:
    """(built, usable, reason): whether the CUDA backend was compiled, can run, and why not."""
