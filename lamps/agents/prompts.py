"""Each turn's prompt as the server gets it: the replay's token ids, mapped into the server's
vocabulary, with the server's own earlier answers in place of the traced ones.

``TokenSpace`` maps the ids ``lamps.replay.traced_tokens`` builds (the replay's, exactly; drawn
below 50,400) to ``(id + offset) mod vocab``. Equal ids stay equal, so a run keeps the traced
sharing; ``vocab`` keeps them inside a model's vocabulary; ``offset`` differs per run, so no run
finds in the server's prefix cache what an earlier run (of this invocation or another) left.

``ConversationPrompts``: the replay's tokens put the trace's next input at the positions of a
turn's answer (the simulated model "samples" them), but a real server generates its own. Where
the next input keeps all of this turn's input, the answer's positions get the tokens the server
generated (``return_token_ids``), in that turn and every later one that keeps them, so the
server's prefix cache finds a turn's answer in the next turn as it would a real agent's. A
server that does not return token ids leaves the traced tokens there: each turn then
recomputes the previous answer, at most its output tokens more than a real agent's turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TokenSpace:
    """Maps the replay's token ids into a vocabulary, shifted by a per-run offset."""

    vocab: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.vocab < 2:
            raise ValueError(f"vocab size: must be >= 2, got {self.vocab}")
        if not 0 <= self.offset < self.vocab:
            raise ValueError(f"token offset: must be in [0, {self.vocab}), got {self.offset}")

    def map(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens`` mapped into the space."""
        return (tokens.astype(np.int64) + self.offset) % self.vocab

    def ids(self, tokens: list[int]) -> list[int]:
        """``tokens`` mapped into the space, as a list."""
        return [int(t) for t in self.map(np.asarray(tokens, dtype=np.int64))]


def _extends(tokens: np.ndarray, previous: np.ndarray) -> bool:
    """Whether ``tokens`` keeps all of ``previous`` and goes on."""
    return len(tokens) > len(previous) and np.array_equal(tokens[: len(previous)], previous)


@dataclass
class _Splice:
    """The server's answer at ``start``, where the traced tokens are ``traced``."""

    start: int
    traced: np.ndarray
    answer: np.ndarray


@dataclass
class ConversationPrompts:
    """One conversation's prompts, turn after turn (see the module docstring)."""

    space: TokenSpace
    spliced_tokens: int = 0  # the server's answer tokens put in place of traced ones
    _previous: np.ndarray | None = None  # the previous turn's traced prompt
    _answer: list[int] | None = None  # what the server generated for it
    _splices: list[_Splice] = field(default_factory=list)

    def prompt(self, traced: list[int]) -> list[int]:
        """The next turn's prompt, from the replay's tokens for it."""
        arr = np.asarray(traced, dtype=np.int64)
        prev, answer = self._previous, self._answer
        if prev is not None and answer and _extends(arr, prev):
            end = min(len(prev) + len(answer), len(arr))
            tokens = np.asarray(answer[: end - len(prev)], dtype=np.int64)
            self._splices.append(_Splice(len(prev), arr[len(prev) : end].copy(), tokens))
            self.spliced_tokens += len(tokens)
        mapped = self.space.map(arr)
        kept = []
        for s in self._splices:
            end = s.start + len(s.traced)
            if end <= len(arr) and np.array_equal(arr[s.start : end], s.traced):
                mapped[s.start : end] = s.answer
                kept.append(s)
        self._splices = kept  # a turn that dropped an answer (compaction) drops it for good
        self._previous, self._answer = arr, None
        return [int(t) for t in mapped]

    def answered(self, token_ids: list[int] | None) -> None:
        """The server's generated token ids for the last prompt (None: it returned none)."""
        self._answer = token_ids
