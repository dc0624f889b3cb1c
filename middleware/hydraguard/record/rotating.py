"""The audit log's file: rotated by size, shared by every process that writes it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from concurrent_log_handler import ConcurrentRotatingFileHandler


class Rotating(ConcurrentRotatingFileHandler):
    """Counts write errors (disk full, permissions) instead of printing tracebacks.

    Several processes may write one log (``hydraguard serve --workers N``, gunicorn
    workers): each line is written and each rotation done under a lock file shared by all
    of them (concurrent-log-handler), where the stdlib's RotatingFileHandler lost lines to
    rotations racing in other processes."""

    def __init__(
        self, path: str, max_bytes: int, backups: int, on_error: Callable[[int], None]
    ) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.on_error = on_error

    def handleError(self, record: logging.LogRecord) -> None:
        self.on_error(getattr(record, "lines", 1))
