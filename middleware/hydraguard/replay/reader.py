"""Read a traffic log (DESIGN.md format): one entry per line, malformed lines kept with
their line number and the reason, so that no line silently drops out of the counts."""

from __future__ import annotations

import gzip
import heapq
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

# Big reads: a log is read front to back once, and one system call per megabyte keeps the
# per-line cost of reading at splitting a buffer.
READ_BUFFER = 1 << 20
_NUMBER = (int, float)  # a tuple, not ``int | float``: isinstance is cheaper with one
_STR = str.__instancecheck__  # isinstance(v, str) as a C function, for map()


@dataclass(slots=True)
class Entry:
    line: int  # 0-based, as the decision lines number them
    size: int  # bytes of the line, for progress
    record: dict[str, Any] | None  # None when malformed
    error: str | None = None

    @property
    def account(self) -> str | None:
        return self.record["account"] if self.record is not None else None


def check_record(record: Any) -> str | None:
    """Why this parsed line is not a usable record, or None. Unknown fields are ignored.

    Runs once per logged request, so it is written for speed: no helper calls, and
    headers checked with a C-level map rather than a generator."""
    if not isinstance(record, dict):
        return "not a JSON object"
    get = record.get
    ts = get("ts")
    if not isinstance(ts, _NUMBER) or ts.__class__ is bool:
        return "ts is missing or not a number"
    account = get("account")
    if not isinstance(account, str) or not account:
        return "account is missing or not a string"
    if not isinstance(get("path"), str):
        return "path is missing or not a string"
    headers = get("headers")
    if headers is not None and not (isinstance(headers, dict) and all(map(_STR, headers.values()))):
        return "headers is not an object of strings"
    ip = get("ip")
    if ip is not None and not isinstance(ip, str):
        return "ip is not a string"
    status = get("status")
    if status is not None and (not isinstance(status, int) or status.__class__ is bool):
        return "status is not an integer"
    usage = get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return "usage is not an object"
        for key in ("input_tokens", "output_tokens"):
            value = usage.get(key)
            if value is not None and not (
                isinstance(value, _NUMBER) and value.__class__ is not bool and value >= 0
            ):
                return f"usage.{key} is not a non-negative number"
    return None


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """One raw line: ``(record, None)`` when usable, else ``(None, why not)``."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"
    problem = check_record(record)
    return (None, problem) if problem is not None else (record, None)


def open_traffic(path: str | Path) -> BinaryIO:
    """The log as a binary file with a large buffer; iterate it for its lines (newline kept).
    Plain files only: ``TrafficLogs`` reads ``.gz`` ones too."""
    return open(path, "rb", buffering=READ_BUFFER)


def read_traffic(path: str | Path) -> Iterator[Entry]:
    """Every line of the log, in file order (a blank line is malformed, not skipped)."""
    with open_traffic(path) as fh:
        for number, raw in enumerate(fh):
            record, error = parse_line(raw)
            yield Entry(number, len(raw), record, error)


class TrafficError(ValueError):
    """A log that cannot be read on (a damaged or cut ``.gz``, an I/O error): the replay
    stops rather than report on part of the traffic as if it were all of it."""


Parsed = tuple[dict[str, Any] | None, str | None]  # the record, or why the line is not one


class TrafficLogs:
    """One or more traffic logs read as one log, each plain or gzip-compressed (``.gz``).

    One file is read front to back. Several are merged by timestamp, each file keeping its
    own order: the rotated files of an audit log (``path.2 path.1 path``, or whatever order
    a shell glob names them in) come out oldest first, and the logs of several replicas
    interleave as their requests arrived, so the replay's clock never jumps back at a file's
    end. A malformed line stays behind the line before it in its file; lines with the same
    timestamp come in the order the files were named. ``where()`` says which file and line
    the line last read came from.

    Use as a context manager; ``lines()`` yields ``(record, why not)`` per line, once.
    ``names`` are what ``where()`` calls the files (``-`` for standard input spooled to a
    file); their paths by default.
    """

    def __init__(
        self, paths: str | Path | Sequence[str | Path], names: Sequence[str] | None = None
    ) -> None:
        self.paths = [paths] if isinstance(paths, str | Path) else list(paths)
        if not self.paths:
            raise ValueError("no traffic log given")
        self.names = list(names) if names is not None else [str(p) for p in self.paths]
        self._files: list[BinaryIO] = []  # the files as stored (compressed), for tell()
        self._origin = (0, -1)  # (file, line) of the line last read
        self._stack = ExitStack()

    @property
    def merged(self) -> bool:
        return len(self.paths) > 1

    def __enter__(self) -> TrafficLogs:
        for path in self.paths:
            stored = self._stack.enter_context(open_traffic(path))
            self._files.append(stored)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def tell(self) -> int:
        """Bytes of the stored files read so far (compressed bytes for ``.gz``)."""
        return sum(f.tell() for f in self._files)

    def where(self) -> str:
        """``path:line`` (1-based, as an editor counts) of the line last read."""
        index, line = self._origin
        return f"{self.names[index]}:{line + 1}"

    def lines(self) -> Iterator[Parsed]:
        if not self.merged:
            for line, raw in enumerate(self._lines(0)):
                self._origin = (0, line)
                yield parse_line(raw)
            return
        for _, index, line, record, error in heapq.merge(
            *(self._keyed(i) for i in range(len(self.paths)))
        ):
            self._origin = (index, line)
            yield record, error

    def _lines(self, index: int) -> Iterator[bytes]:
        stored = self._files[index]
        if not str(self.paths[index]).endswith(".gz"):
            yield from stored  # a plain file: nothing to go wrong mid-way but the disk
            return
        lines = self._stack.enter_context(gzip.GzipFile(fileobj=stored, mode="rb"))
        read = 0
        try:
            for raw in lines:
                read += 1
                yield raw
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise TrafficError(
                f"{self.names[index]}: cannot read on after line {read}: {exc}"
            ) from exc

    def _keyed(
        self, index: int
    ) -> Iterator[tuple[float, int, int, dict[str, Any] | None, str | None]]:
        """One file's lines keyed for the merge: (ts, file, line, ...); unique up to line."""
        ts = float("-inf")
        for line, raw in enumerate(self._lines(index)):
            record, error = parse_line(raw)
            if record is not None:
                ts = max(ts, record["ts"])  # a file's order is kept: never back in time
            yield ts, index, line, record, error
