"""Read a traffic log (DESIGN.md format): one entry per line, malformed lines kept with
their line number and the reason, so that no line silently drops out of the counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(slots=True)
class Entry:
    line: int  # 0-based, as the decision lines number them
    size: int  # bytes of the line, for progress
    record: dict[str, Any] | None  # None when malformed
    error: str | None = None

    @property
    def account(self) -> str | None:
        return self.record["account"] if self.record is not None else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_record(record: Any) -> str | None:
    """Why this parsed line is not a usable record, or None. Unknown fields are ignored."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not _number(record.get("ts")):
        return "ts is missing or not a number"
    if not isinstance(record.get("account"), str) or not record["account"]:
        return "account is missing or not a string"
    if not isinstance(record.get("path"), str):
        return "path is missing or not a string"
    headers = record.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        return "headers is not an object of strings"
    if record.get("ip") is not None and not isinstance(record["ip"], str):
        return "ip is not a string"
    status = record.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        return "status is not an integer"
    usage = record.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return "usage is not an object"
        for key in ("input_tokens", "output_tokens"):
            value = usage.get(key)
            if value is not None and not (_number(value) and value >= 0):
                return f"usage.{key} is not a non-negative number"
    return None


def read_traffic(path: str | Path) -> Iterator[Entry]:
    """Every line of the log, in file order (a blank line is malformed, not skipped)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Entry(number, len(raw), None, f"not valid JSON: {exc}")
                continue
            problem = check_record(record)
            if problem is not None:
                yield Entry(number, len(raw), None, problem)
            else:
                yield Entry(number, len(raw), record)
