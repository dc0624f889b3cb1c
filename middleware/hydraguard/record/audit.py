"""The audit log: one traffic-log line per request (DESIGN.md), written off the request path.

The request path only encodes the line (orjson, microseconds) and puts it on a bounded
queue; a stdlib ``QueueListener`` thread hands it to a ``ConcurrentRotatingFileHandler``
(concurrent-log-handler), which rotates by size and writes the lines queued meanwhile with
one ``write`` call followed by a flush, under a lock file that every process writing the
log shares, so a reader never sees half a line and no process loses lines to another's
rotation. When the queue is full the line is dropped and
counted: a slow disk must not grow memory or stall the event loop.

Lines are in arrival order, as the format says, although requests finish in any order: a
request takes its place when it arrives (``arrive()``) and a finished line waits for the
lines of the requests that arrived before it. At most ``queue_size`` lines wait (as many
as the queue holds): past that, a request still running (a long stream) stops holding the
others back and its line is written when it finishes, late.

Request bodies larger than ``body_cap`` bytes (as JSON) are replaced by a marker
object: the body's top-level fields that fit within the cap, in order (large ones
such as ``messages`` are left out), plus ``"_hydraguard_truncated": {"bytes": N,
"dropped": [up to 20 field names]}``. Replay still sees ``model``, ``max_tokens``, ``logprobs``
and the like, but not the prompt.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..identify import CREDENTIAL_HEADERS, Identity

TRUNCATED = "_hydraguard_truncated"

# The context headers of DESIGN.md, plus the user agent (a weak linking signal).
CONTEXT_HEADERS = (
    "x-account-id",
    "x-account-tier",
    "x-org-id",
    "x-payment-fingerprint",
    "x-device-fingerprint",
    "x-ja4",
    "user-agent",
)

log = logging.getLogger("hydraguard.audit")


class AuditConfig(BaseModel):
    """The policy's ``audit:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    path: str = "hydraguard-audit.jsonl"
    max_bytes: Annotated[int, Field(ge=4096)] = 100 * 1024 * 1024  # rotate at this size
    backups: Annotated[int, Field(ge=0)] = 5  # rotated files kept: path.1 ... path.N
    body_cap: Annotated[int, Field(ge=0)] = 64 * 1024  # larger bodies become a marker
    headers: tuple[str, ...] = CONTEXT_HEADERS  # request headers kept (lower-cased)
    queue_size: Annotated[int, Field(ge=1)] = 10_000  # lines waiting for the disk

    @model_validator(mode="after")
    def _cap_fits(self) -> AuditConfig:
        if self.body_cap >= self.max_bytes:
            raise ValueError("body_cap must be smaller than max_bytes")
        return self


def audit_record(
    identity: Identity,
    method: str,
    path: str,
    body: Any,  # the parsed JSON object, or the raw JSON bytes as received
    status: int | None,
    usage: tuple[int, int] | Mapping[str, int] | None,
    ts: float,
    headers: Iterable[str] = CONTEXT_HEADERS,
    state_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """One traffic-log record. ``identity.account`` is already resolved (an API key only
    ever appears hashed); only the named context headers are kept, never credentials, and
    the named ``scope["state"]`` keys, as an extra ``state`` field when any is set."""
    if isinstance(usage, tuple):
        usage = {"input_tokens": usage[0], "output_tokens": usage[1]}
    seen = identity.headers
    kept = {
        name: seen[name]
        for name in (h.lower() for h in headers)
        if name in seen and name not in CREDENTIAL_HEADERS  # never written, even when named
    }
    record = {
        # The clock's value as the decision read it, not rounded: replay decides on these
        # timestamps, and a millisecond off moved every risk score (its decay), and could
        # move a decision at a window's or a block's edge (tests/replay/test_replay_live_parity.py).
        "ts": ts,
        "account": identity.account,
        "ip": identity.client_ip,
        "headers": kept,
        "method": method,
        "path": path,
        "body": body,
        "status": status,
        "usage": dict(usage) if usage is not None else None,
    }
    state = identity.state
    if state:
        values = {key: _plain(state[key]) for key in state_keys if state.get(key) is not None}
        if values:
            record["state"] = values
    return record


def _plain(value: Any) -> Any:
    """A state value as JSON can hold it: numbers, strings and lists of them stay as they
    are (a signal may have several values); anything else is written as its str()."""
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [v if isinstance(v, str | int | float | bool) else str(v) for v in value]
    return str(value)


def cap_body(body: Any, encoded: bytes, body_cap: int) -> dict[str, Any]:
    """The truncation marker for a body whose JSON (``encoded``) exceeds ``body_cap``."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    room = body_cap - 64  # leave room for the marker itself
    for key, value in body.items() if isinstance(body, dict) else ():
        size = len(orjson.dumps(value)) + len(key) + 4
        if size <= room:
            kept[key] = value
            room -= size
        else:
            dropped.append(str(key))
    kept[TRUNCATED] = {"bytes": len(encoded), "dropped": dropped[:20]}
    return kept


def encode_line(record: Mapping[str, Any], body_cap: int) -> bytes:
    """The record as one JSON line (no newline), its body capped. The body may be the parsed
    object or the raw JSON bytes as received (before any rewrite): those are not re-encoded."""
    body = record.get("body")
    if body is None:
        return orjson.dumps(record)
    if isinstance(body, bytes | bytearray):
        # Valid JSON holds raw CR/LF only as whitespace (inside strings they are escaped),
        # so blanking them keeps the document and makes it one line.
        encoded = bytes(body).replace(b"\r", b" ").replace(b"\n", b" ")
        if len(encoded) > body_cap:
            body = orjson.loads(encoded)
    else:
        encoded = orjson.dumps(body)
    if len(encoded) > body_cap:
        return orjson.dumps({**record, "body": cap_body(body, encoded, body_cap)})
    # Splice the encoded body in rather than encode it (again) as part of the record.
    keys = list(record)
    at = keys.index("body")
    head = orjson.dumps({k: record[k] for k in keys[:at]})[:-1]  # keep the field order
    tail = orjson.dumps({k: record[k] for k in keys[at + 1 :]})[1:]
    return (
        head
        + (b',"body":' if at else b'"body":')
        + encoded
        + (b"," + tail if len(tail) > 1 else tail)
    )


# Lines written at once by the writer thread: at most about this much (a full default queue
# of lines with bodies), and a sixteenth of the rotation size (a batch goes whole into one
# file, so a file rotates within a sixteenth of max_bytes of it; a longer line is a batch of
# its own).
_BATCH_CHARS = 1 << 24


class _Listener(logging.handlers.QueueListener):
    """Lines travel as str; the writer thread takes every line queued (up to ``_BATCH_CHARS``)
    and writes them as one record: one lock-file round, one ``write``, one flush.

    One line per record cost the thread ~16 us and a dozen GIL hand-overs (the lock file,
    the stat of the log, the write and the flush each release it); against an event loop that
    never idles, each hand-over waits out the interpreter's 5 ms switch interval, so the
    thread fell behind and a full queue dropped lines. Batched, the hand-overs are paid per
    batch, which grows with the backlog (``benchmarks/bench_audit.py``, a loop busy 150 us a
    line: 16,698-23,643 of 40,000 lines dropped one line at a time, none batched; under
    ``hydraguard serve`` saturated by wrk, none). A loop that releases the GIL only for a
    moment between requests is worse than one that never does: CPython's waiting thread asks
    for the GIL only when nobody took it during its 5 ms wait, and each such moment counts as
    a hand-over, so the thread runs only when it wins one by chance (a driver calling the
    middleware back to back: a 6.5 MB batch took 2-3 s of wall time for 0.2 s of CPU, and a
    quarter of the lines were dropped; README, "Lines not in the log")."""

    def __init__(
        self, queue_: queue.Queue[str | None], handler: logging.Handler, batch_chars: int
    ) -> None:
        super().__init__(queue_, handler)
        self._lines = queue_
        self._batch_chars = batch_chars
        self._stopping = False

    def dequeue(self, block: bool) -> Any:
        if self._stopping:
            return None  # QueueListener's sentinel
        first = self._lines.get(block)
        if first is None:
            return None
        lines, size = [first], len(first)
        while size < self._batch_chars:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._stopping = True  # the batch first, then stop
                break
            lines.append(line)
            size += len(line)
        return lines

    def handle(self, record: Any) -> None:
        super().handle(record)
        # One task_done per line taken, as queue.join() counts (the loop calls it once).
        for _ in range(len(record) - 1):
            self._lines.task_done()

    def prepare(self, record: Any) -> logging.LogRecord:
        entry = logging.LogRecord(
            "hydraguard.audit", logging.INFO, "", 0, "\n".join(record), None, None
        )
        entry.lines = len(record)  # counted as that many errors if the write fails
        return entry

    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]  # wait for room: never lose the stop


class AuditLog:
    """``AuditLog(path).write(record)`` from the event loop; ``close()`` flushes and stops.

    Also usable as a context manager. ``dropped`` counts lines lost to a full queue,
    ``errors`` lines the file refused; ``on_drop`` (e.g. a Prometheus counter's
    ``inc``) is called for each dropped line.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = AuditConfig.model_fields["max_bytes"].default,
        backups: int = AuditConfig.model_fields["backups"].default,
        body_cap: int = AuditConfig.model_fields["body_cap"].default,
        queue_size: int = AuditConfig.model_fields["queue_size"].default,
        on_drop: Callable[[], None] | None = None,
        max_waiting: int | None = None,  # lines waiting for an earlier one; default queue_size
    ) -> None:
        self.path = str(path)
        self.body_cap = body_cap
        self.dropped = 0
        self.errors = 0
        self.on_drop = on_drop
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        # Arrival order: places handed out, the next place to write, finished lines waiting
        # for earlier places (None: that request wrote no line).
        self._lock = threading.Lock()
        self._arrived = 0
        self._next = 0
        self._waiting: dict[int, str | None] = {}
        self._max_waiting = queue_size if max_waiting is None else max_waiting
        # Imported here, when a log is opened: concurrent-log-handler pulls in portalocker and,
        # through it, redis (~120 ms of every CLI start, `hydraguard check` included).
        from .rotating import Rotating

        self._handler = Rotating(self.path, max_bytes, backups, self._error)
        batch_chars = min(_BATCH_CHARS, max_bytes // 16)
        self._listener = _Listener(self._queue, self._handler, batch_chars)
        self._listener.start()
        self._open = True

    @classmethod
    def from_config(
        cls, config: AuditConfig, on_drop: Callable[[], None] | None = None
    ) -> AuditLog:
        return cls(
            config.path,
            max_bytes=config.max_bytes,
            backups=config.backups,
            body_cap=config.body_cap,
            queue_size=config.queue_size,
            on_drop=on_drop,
        )

    def arrive(self) -> int:
        """The place in the log of a request arriving now; pass it to ``write`` (or to
        ``skip`` when the request writes no line), or every later line waits for it."""
        with self._lock:
            place = self._arrived
            self._arrived += 1
            return place

    def write(self, record: Mapping[str, Any], place: int | None = None) -> bool:
        """Queue one record; never blocks. With a ``place`` from ``arrive``, the line waits
        for the lines of earlier places. False when it was dropped (queue full or closed)."""
        line = encode_line(record, self.body_cap).decode("utf-8")
        if place is None:
            return self._put(line)
        with self._lock:
            if place < self._next:  # given up waiting for: it is late
                return self._put(line)
            self._waiting[place] = line
            return self._release()

    def skip(self, place: int) -> None:
        """The request of ``place`` writes no line: later lines stop waiting for it."""
        with self._lock:
            if place >= self._next:
                self._waiting[place] = None
                self._release()

    def _release(self) -> bool:
        """Queue the waiting lines whose turn it is (under the lock); False if any dropped."""
        queued = True
        waiting = self._waiting
        while True:
            while self._next in waiting:
                line = waiting.pop(self._next)
                self._next += 1
                if line is not None:
                    queued = self._put(line) and queued
            if len(waiting) <= self._max_waiting:
                return queued
            self._next = min(waiting)  # stop waiting for the requests still running

    def _put(self, line: str) -> bool:
        if self._open:
            try:
                self._queue.put_nowait(line)
                return True
            except queue.Full:
                pass
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()
        return False

    def _error(self, lines: int) -> None:
        first = not self.errors
        self.errors += lines
        if first:
            log.error("hydraguard: cannot write the audit log %s", self.path, exc_info=True)

    def close(self) -> None:
        """Write what is queued, stop the thread and close the file (idempotent)."""
        if not self._open:
            return
        with self._lock:  # what waits for a request still running is written now, in order
            self._max_waiting = 0
            self._release()
        self._open = False
        self._listener.stop()
        self._handler.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
