"""Stateless-API pins: a program's finished turn kept in the prefix cache until its TTL expires.

Over an OpenAI-style API each turn of an agent program is a new request that resends the whole
conversation; vLLM frees a finished turn's blocks into its prefix cache, where they may be
evicted before the next turn arrives. Continuum (`Hanchenli/vllm-continuum`, through the fork
`Whrlicht/vllm-continuum` 22746a2, `vllm/v1/core/sched/scheduler.py`) keeps them: when a turn
ends in a tool call it pins the turn for a TTL (its block-freeing hook, `pin_request`), drops the
program's earlier pin first, unpins at expiry unless the program has a turn waiting
(`unpin_requests_regular`), and under memory pressure with at most one running request gives
up the pin that would last longest (`pop_running_request_based_on_last_step`).

`ProgramPins` does this on the pause mechanism's pins (`KvPauses.pin`): the turn's full blocks
are pinned under the program's key; the next turn finds them through vLLM's own prefix lookup.
It is keyed by a program id (vLLM's `Request.session_id`, or one the caller provides) and holds
nothing else, so any scheduler serving stateless turns can use it. One difference from the
code: the pin is dropped when the program's next turn is admitted (that request then holds the
blocks), not when that turn finishes.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.request import Request

from lamps.mechanism.pausing import KvPauses


def _key(program: str) -> str:
    return f"program:{program}"


class ProgramPins:
    """Each program's pinned last turn and when its pin expires."""

    def __init__(self, pauses: KvPauses) -> None:
        self._pauses = pauses
        self._expires: dict[str, float] = {}
        self._waiting: set[str] = set()  # programs with a turn queued: their pins stay

    def pin_turn(self, program: str, request: Request, expires: float) -> int:
        """Pin the finished turn's blocks until `expires` (dropping the program's older pin);
        returns the blocks pinned. Call before vLLM frees the request."""
        self.unpin(program)
        blocks: list[Any] = self._pauses.blocks_of(request)
        if not blocks:
            return 0
        self._pauses.pin(_key(program), blocks)
        self._expires[program] = expires
        return len(blocks)

    def turn_queued(self, program: str) -> None:
        """The program's next turn arrived: keep its pin, even past the TTL, until admitted."""
        self._waiting.add(program)

    def turn_admitted(self, program: str) -> bool:
        """The program's next turn was admitted and holds the blocks: drop the pin."""
        self._waiting.discard(program)
        return self.unpin(program) > 0

    def expire(self, now: float) -> list[str]:
        """Unpin the programs whose TTL ran out and that have no turn waiting."""
        gone = [
            program
            for program, expires in self._expires.items()
            if now >= expires and program not in self._waiting
        ]
        for program in gone:
            self.unpin(program)
        return gone

    def evict_latest(self) -> str | None:
        """Give up the pin that would last longest (memory pressure); its program, or None."""
        if not self._expires:
            return None
        program = max(self._expires, key=self._expires.__getitem__)
        self.unpin(program)
        return program

    def unpin(self, program: str) -> int:
        """Drop the program's pin; the blocks released."""
        self._expires.pop(program, None)
        return self._pauses.unpin(_key(program))

    def forget(self, program: str) -> None:
        """The program ended."""
        self._waiting.discard(program)
        self.unpin(program)

    def is_pinned(self, program: str) -> bool:
        return program in self._expires

    def expiry(self, program: str) -> float | None:
        return self._expires.get(program)

    def __len__(self) -> int:
        return len(self._expires)
