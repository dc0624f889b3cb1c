"""Read usage from a response as it streams past: a JSON body or an SSE stream.

Hand-written SSE line handling because it must work incrementally on the bytes the
app sends (no client-side SSE library reads from an ASGI ``send``) and must survive
garbage: an unparsable event is counted and skipped, never fatal.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import orjson

from ..inspect.dialect import Dialect, StreamTally

_MAX_JSON = 8 * 1024 * 1024  # a non-streamed completion body larger than this is not parsed
_MAX_EVENT = 1024 * 1024  # one SSE event larger than this is skipped as broken


class UsageReader:
    """Fed every body chunk of one response; says what the upstream used, or estimates it."""

    __slots__ = (
        "_buffer",
        "_data",
        "_decoder",
        "_dialect",
        "_mode",
        "bad_events",
        "body_bytes",
        "tally",
    )

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._mode = ""  # "json" | "sse" | "" (ignored)
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._decoder: Any = None
        self.tally = StreamTally()
        self.bad_events = 0
        self.body_bytes = 0

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        content_type = encoding = b""
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-type":
                content_type = value.lower()
            elif lowered == b"content-encoding":
                encoding = value.lower().strip()
        if b"text/event-stream" in content_type:
            self._mode = "sse"
        elif b"json" in content_type:
            self._mode = "json"
        if encoding in (b"gzip", b"deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        elif encoding not in (b"", b"identity"):
            self._mode = ""  # e.g. br: we cannot read it, so the estimate applies

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._mode:
            self.body_bytes += len(chunk)
            return
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zlib.error:
                self._mode = ""
                return
        self.body_bytes += len(chunk)
        if self._mode == "json":
            if len(self._buffer) + len(chunk) <= _MAX_JSON:
                self._buffer += chunk
            else:
                self._mode = ""
            return
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _MAX_EVENT:
                    self._buffer.clear()
                    self.bad_events += 1
                return
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            self._line(line)

    def finish(self) -> None:
        if self._mode == "json" and self._buffer:
            try:
                body = orjson.loads(self._buffer)
            except ValueError:
                self.bad_events += 1
            else:
                found = self._dialect.usage(body)
                if found is not None:
                    self.tally.input_tokens, self.tally.output_tokens = found
        elif self._mode == "sse":
            if self._buffer:
                self._line(bytes(self._buffer).rstrip(b"\r"))
            self._line(b"")
        self._buffer.clear()

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                payload = b"\n".join(self._data)
                self._data.clear()
                if payload.strip() == b"[DONE]":
                    return
                try:
                    event = orjson.loads(payload)
                except ValueError:
                    self.bad_events += 1
                    return
                self._dialect.stream_event(event, self.tally)
            return
        if line.startswith(b"data:"):
            payload = line[5:]
            self._data.append(payload[1:] if payload.startswith(b" ") else payload)

    def output_estimate(self, chars_per_token: float, status: int) -> int:
        """Output when the upstream never said: streamed text / chars_per_token, at least one
        token per streamed delta; for a successful body we could not read, its size /
        chars_per_token; for an error with nothing streamed, zero (the input still counts)."""
        tally = self.tally
        if tally.deltas or tally.chars:
            return max(tally.deltas, math.ceil(tally.chars / chars_per_token))
        if status >= 400 or status == 0:
            return 0
        return math.ceil(self.body_bytes / chars_per_token)
