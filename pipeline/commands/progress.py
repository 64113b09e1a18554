"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``[label] done/total [####....] N unit/s extra``, redrawn at most 10 times a second.

    Args:
        total: the count that means done.
        unit: what is counted (for the rate).
        label: a prefix (e.g. the command's name).
        stream: where to draw (default stderr).
        enabled: draw or not (default: whether ``stream`` is a terminal).
    """

    def __init__(self, total: int, unit: str = "items", label: str = "", stream=None, enabled=None, width: int = 30):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = bool(enabled) and total > 0
        self.total, self.unit, self.label, self.width = total, unit, label, width
        self.start = self._last = time.monotonic()
        self.shown = False

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and not force):
            return
        self._last = now
        rate = done / max(now - self.start, 1e-9)
        fill = int(self.width * min(done, self.total) / self.total)
        head = f"{self.label} " if self.label else ""
        tail = f" {extra}" if extra else ""
        self.stream.write(
            f"\r{head}{done}/{self.total} [{'#' * fill}{'.' * (self.width - fill)}] {rate:.1f} {self.unit}/s{tail}"
        )
        self.stream.flush()
        self.shown = True

    def finish(self, extra: str = "") -> None:
        """Draw the final state and end the line (a summary goes below it)."""
        if self.enabled:
            self.update(self.total, extra, force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False

    def clear(self) -> None:
        """Erase the bar (before printing a warning line)."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.shown = False
