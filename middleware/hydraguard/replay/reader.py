"""Read a traffic log (DESIGN.md format): one entry per line, malformed lines kept with
their line number and the reason, so that no line silently drops out of the counts."""

from __future__ import annotations

from collections.abc import Iterator
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
    """The log as a binary file with a large buffer; iterate it for its lines (newline kept)."""
    return open(path, "rb", buffering=READ_BUFFER)


def read_traffic(path: str | Path) -> Iterator[Entry]:
    """Every line of the log, in file order (a blank line is malformed, not skipped)."""
    with open_traffic(path) as fh:
        for number, raw in enumerate(fh):
            record, error = parse_line(raw)
            yield Entry(number, len(raw), record, error)
