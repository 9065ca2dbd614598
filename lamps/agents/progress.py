"""The progress line of ``lamps agents`` on stderr: rewritten in place on a terminal, else one
line every ``every`` seconds (a log file gets a readable history, not carriage returns)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    """Prints ``text()`` periodically while a run goes on, and once more at its end."""

    def __init__(
        self,
        text: Callable[[], str],
        stream: TextIO | None = None,
        *,
        tick: float = 1.0,
        every: float = 10.0,
    ) -> None:
        self.text = text
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tick = tick if self.tty else every
        self._width = 0
        self._last = ""

    def show(self) -> None:
        """Prints the current line."""
        line = self._last = self.text()
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    async def run(self) -> None:
        """Shows the line every tick until cancelled."""
        while True:
            await asyncio.sleep(self.tick)
            self.show()

    def close(self) -> None:
        """The final line (ended with a newline on a terminal), unless already shown."""
        if self.tty or self.text() != self._last:
            self.show()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
