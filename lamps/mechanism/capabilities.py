"""What a KV connector offers the pause mechanism: capabilities it declares, checked at startup.

vLLM asks a connector what it supports through mixins it inherits (`SupportsHMA`); the pause
mechanism does the same. A connector that can take a paused request's KV to host memory and
load it back inherits `SwapsPausedKv`; one that can keep the finished turn of an HTTP session
on the host until the session's next request inherits `KeepsSessionTurns`. The LAMPS swap
connector (`lamps.connector`) declares both. vLLM's own CPU offloading connectors declare
nothing, but write every block through to host memory, which serves a swap as well
(`writes_through_to_host`). Schedulers resolve these once, when they start, and keep the typed
result; a connector without a capability is simply not used for it (a pause is discarded
instead of swapped).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.v1.request import Request

# vLLM's native CPU offloading connectors write KV through to host memory and load it back
# when a request's prefix is looked up, which is what a swap needs.
OFFLOADING_CONNECTORS = frozenset({"OffloadingConnector", "SimpleCPUOffloadConnector"})


class SwapsPausedKv(ABC):
    """A connector that copies a paused request's KV to host memory and loads it at resume."""

    @abstractmethod
    def lamps_swap_out(self, request: Request) -> bool:
        """Take over a paused request's KV: True means the caller may free its GPU blocks now."""

    @abstractmethod
    def lamps_drop_copy(self, request_id: str) -> bool:
        """Give up a request's host copy (not one being loaded): it recomputes at resume."""

    @abstractmethod
    def lamps_pending_free_blocks(self) -> int:
        """GPU blocks that return to the pool when the copies reading them end."""

    @abstractmethod
    def lamps_link_backlog_tokens(self) -> tuple[int, int]:
        """Tokens of the copies not yet ended, (out, in): what a new copy waits behind."""

    @abstractmethod
    def lamps_pace_loads(self, tokens_per_step: int | None) -> None:
        """Send at most `tokens_per_step` tokens of loads per step (None: whole loads)."""

    @property
    @abstractmethod
    def num_free_host_blocks(self) -> int:
        """Host blocks not reserved by a copy."""

    @abstractmethod
    def swap_state(self, request_id: str) -> str | None:
        """The state of the request's host copy ("queued", "saving", "saved", "loading"), or
        None when it has none."""


class KeepsSessionTurns(ABC):
    """A connector that keeps a finished session turn's KV on the host for the next request."""

    @abstractmethod
    def lamps_park_turn(self, key: str, blocks: list[Any], hashes: list[Any]) -> bool:
        """Copy `blocks` (hashes `hashes`) to host memory under `key`; False if refused."""

    @abstractmethod
    def lamps_drop_turn(self, key: str) -> None:
        """Forget the host copy under `key` (loaded or not)."""


def pause_swapper(connector: object | None) -> SwapsPausedKv | None:
    """The connector's swap capability, or None when it declares none."""
    return connector if isinstance(connector, SwapsPausedKv) else None


def session_turn_keeper(connector: object | None) -> KeepsSessionTurns | None:
    """The connector's capability to keep session turns, or None when it declares none."""
    return connector if isinstance(connector, KeepsSessionTurns) else None


def writes_through_to_host(connector: object | None) -> bool:
    """Whether the connector is one of vLLM's CPU offloading connectors (every block written
    through to host memory and found again by prefix lookup)."""
    return connector is not None and type(connector).__name__ in OFFLOADING_CONNECTORS


def capability_summary(connector: object | None) -> str:
    """What the connector offers the pauses, for the scheduler's startup log line."""
    if connector is None:
        return "no KV connector: swaps fall back to discard"
    offers = [
        name
        for name, present in (
            ("SwapsPausedKv", pause_swapper(connector) is not None),
            ("KeepsSessionTurns", session_turn_keeper(connector) is not None),
            ("writes through to host", writes_through_to_host(connector)),
        )
        if present
    ]
    return f"{type(connector).__name__}: {', '.join(offers) or 'nothing the pauses use'}"
