"""A one-line progress bar on stderr, only when stderr is a terminal.

Hand-written: twenty lines do it, and a dependency (tqdm) for this alone is not worth it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_REDRAW = 0.2  # seconds between redraws at most


class Progress:
    def __init__(self, total_bytes: int, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total_bytes, 1)
        self.label = label
        self.done = 0
        self.records = 0
        self.started = time.monotonic()
        self._shown = 0.0

    @classmethod
    def maybe(cls, total_bytes: int, label: str, stream: TextIO | None = None) -> Progress | None:
        stream = stream if stream is not None else sys.stderr
        return cls(total_bytes, label, stream) if stream.isatty() else None

    def update(self, done_bytes: int, records: int) -> None:
        """Where the replay is: bytes of the log read and lines done. Called every few
        thousand lines, not per line, so it costs nothing on the replay loop."""
        self.done, self.records = done_bytes, records
        now = time.monotonic()
        if now - self._shown >= _REDRAW:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        share = min(self.done / self.total, 1.0)
        filled = int(share * _WIDTH)
        rate = self.records / max(now - self.started, 1e-9)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {share:4.0%} {self.records} lines {rate:,.0f}/s")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()
