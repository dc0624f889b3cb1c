"""Read usage from a response as it streams past: a JSON body or an SSE stream.

Hand-written SSE line handling because it must work incrementally on the bytes the
app sends (no client-side SSE library reads from an ASGI ``send``) and must survive
garbage: an unparsable event is counted and skipped, never fatal.
"""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any

import orjson

from ..inspect.dialect import Dialect, StreamTally
from .encodings import READABLE, decoder_for

_MAX_JSON = 8 * 1024 * 1024  # a non-streamed completion body larger than this is not parsed
_MAX_EVENT = 1024 * 1024  # one SSE line or event larger than this is skipped as broken
_INFLATE_STEP = 256 * 1024  # a compressed body is inflated this much at a time (a bomb stays small)
# A compressed stream that has inflated past _MAX_JSON and past this many times the
# compressed bytes read is a bomb: it is read no further and keeps its reservation, as an
# undecodable body does. Real SSE compresses ~50x; a stream repeating one chunk can go
# higher (~340x for a 52-byte chunk), which is why the 8 MiB floor comes first: a whole
# long completion is read before the ratio counts. Before, a 1 MB gzip inflated to 1 GiB
# of events inside one feed() and held the event loop for minutes.
_MAX_INFLATE_RATIO = 300

log = logging.getLogger("hydraguard")


class UsageReader:
    """Fed every body chunk of one response; says what the upstream used, or estimates it."""

    __slots__ = (
        "_buffer",
        "_compressed",
        "_cr",
        "_data",
        "_data_bytes",
        "_decoder",
        "_dialect",
        "_mode",
        "_skip_line",
        "bad_events",
        "body_bytes",
        "tally",
        "unreadable",
    )

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._mode = ""  # "json" | "sse" | "" (ignored)
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_bytes = 0  # of the event being read; above _MAX_EVENT it is dropped
        self._skip_line = False  # the rest of an oversized line is dropped
        self._cr = False  # the last chunk ended with CR: a LF starting the next one ends nothing
        self._decoder: Any = None
        self._compressed = 0  # compressed bytes fed to the decoder
        self.tally = StreamTally()
        self.bad_events = 0
        self.body_bytes = 0
        self.unreadable = False  # a coding we cannot decode, or a corrupt compressed body

    # start, feed and finish never raise: a fault in reading usage (a bug here or in a
    # dialect's usage parsing, met by some upstream's answer) must cost neither the response,
    # which passes through the app's ``send`` around these calls, nor its settlement. The
    # body then counts as unreadable, so its reservation stands (``output_estimate``).

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            self._start(headers)
        except Exception as exc:
            self._fault(exc)

    def feed(self, chunk: bytes) -> None:
        try:
            self._feed(chunk)
        except Exception as exc:
            self._fault(exc)

    def finish(self) -> None:
        try:
            self._finish()
        except Exception as exc:
            self._fault(exc)

    def _fault(self, exc: Exception) -> None:
        if not self.unreadable:
            log.error("hydraguard: reading usage failed; the reservation stands", exc_info=exc)
        self._mode = ""
        self._buffer.clear()
        self.unreadable = True

    def _start(self, headers: list[tuple[bytes, bytes]]) -> None:
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
        if encoding and encoding not in READABLE:
            self._mode = ""  # e.g. br: we cannot read it, so the reservation stands
            self.unreadable = True
        else:
            self._decoder = decoder_for(encoding)

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._mode:
            self.body_bytes += len(chunk)
            return
        decoder = self._decoder
        if decoder is None:
            self._take(chunk)
            return
        # Inflated a step at a time: a small compressed body may expand a thousandfold.
        self._compressed += len(chunk)
        try:
            self._take(decoder.decompress(chunk, _INFLATE_STEP))
            while self._mode and not self._bomb(decoder) and decoder.unconsumed_tail:
                self._take(decoder.decompress(decoder.unconsumed_tail, _INFLATE_STEP))
        except zlib.error:
            self._mode = ""
            self.unreadable = True

    def _bomb(self, decoder: Any) -> bool:
        """A stream inflating beyond ``_MAX_INFLATE_RATIO``: stop reading it (unreadable).
        A JSON body needs no check: it stops at ``_MAX_JSON``."""
        consumed = self._compressed - len(decoder.unconsumed_tail)
        if self._mode != "sse" or self.body_bytes <= max(_MAX_JSON, _MAX_INFLATE_RATIO * consumed):
            return False
        self._mode = ""
        self._buffer.clear()
        self.unreadable = True
        return True

    def _take(self, chunk: bytes) -> None:
        """Readable (decoded) body bytes."""
        if not chunk:  # compressed bytes that inflate to nothing must not end a CRLF
            return
        self.body_bytes += len(chunk)
        if self._mode == "json":
            if len(self._buffer) + len(chunk) <= _MAX_JSON:
                self._buffer += chunk
            else:
                self._mode = ""
                self._buffer.clear()
            return
        if self._cr or b"\r" in chunk:
            # SSE lines end with CRLF, LF or a lone CR; make them all LF, a CRLF cut between
            # two chunks included.
            if self._cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer
        scanned = len(buffer)  # holds no LF: only the new bytes need searching
        buffer += chunk
        end = buffer.find(b"\n", scanned)
        while end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if self._skip_line:
                self._skip_line = False
            else:
                self._line(line)
            if buffer and (not self._data_bytes or self._data_bytes > _MAX_EVENT):
                _skip_idle_lines(buffer, self._data_bytes > _MAX_EVENT)
            end = buffer.find(b"\n")
        if self._skip_line:
            buffer.clear()  # more of an oversized line
        elif len(buffer) > _MAX_EVENT:
            if buffer.startswith(b"data:"):
                self._data_bytes = _MAX_EVENT + 1  # its event is dropped (and counted) at its end
            else:
                self.bad_events += 1
            buffer.clear()
            self._skip_line = True

    def _finish(self) -> None:
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
            if self._buffer and not self._skip_line:
                self._line(bytes(self._buffer))
            self._line(b"")
        self._buffer.clear()

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data_bytes > _MAX_EVENT:
                self.bad_events += 1
            elif self._data:
                payload = b"\n".join(self._data)
                if payload.strip() != b"[DONE]":
                    try:
                        event = orjson.loads(payload)
                    except ValueError:
                        self.bad_events += 1
                    else:
                        self._dialect.stream_event(event, self.tally)
            self._data.clear()
            self._data_bytes = 0
            return
        if line.startswith(b"data:"):
            payload = line[5:]
            if payload.startswith(b" "):
                payload = payload[1:]
            self._data_bytes += len(payload) + 1
            if self._data_bytes > _MAX_EVENT:
                self._data.clear()  # the event is dropped when it ends
            else:
                self._data.append(payload)

    def output_estimate(self, chars_per_token: float, status: int, reserved: int) -> int:
        """Output when the upstream never said: streamed text / chars_per_token, at least one
        token per streamed delta; for an error with nothing streamed, zero (the input still
        counts); for a successful body we could not decode (a coding such as br, or corrupt
        compressed bytes), at least the output ``reserved`` for it, since its compressed size
        would under-count; for any other successful body without usage, its size / chars_per_token."""
        tally = self.tally
        streamed = max(tally.deltas, math.ceil(tally.chars / chars_per_token))
        if self.unreadable and 0 < status < 400:
            return max(streamed, reserved)
        if streamed:
            return streamed
        if status >= 400 or status == 0:
            return 0
        return math.ceil(self.body_bytes / chars_per_token)


def _skip_idle_lines(buffer: bytearray, dropping: bool) -> None:
    """Drop the complete lines at the head of ``buffer`` that would change nothing, in one C
    call instead of one Python call per line: with no event under way, every line before the
    next ``data:`` line (blank lines, comments, ``event:``/``id:`` fields); while an oversized
    event is being dropped (``dropping``), every line before the blank line that ends it.
    A stream of bare newlines cost ~1.3 us a line, 20 s for 16 MiB of them."""
    if buffer.startswith(b"\n" if dropping else b"data:"):
        return
    found = buffer.find(b"\n\n" if dropping else b"\ndata:")
    if found < 0:
        found = buffer.rfind(b"\n")  # every complete line goes; a partial one is kept
    if found >= 0:
        del buffer[: found + 1]


def usage_reported_later(status: int, input_estimate: int, output_reserved: int) -> tuple[int, int]:
    """(input, output) charged for a request whose dialect bills later (``usage_later``:
    batches), whose response carries no usage. Created (2xx): its whole reservation, the
    input estimate and the output reserved, since the upstream runs every entry later and
    hydraguard never sees that bill. Anything else (an error, a redirect, no response):
    the batch was not created, so only its input estimate is charged, as for any request
    that failed without streaming (``UsageReader.output_estimate``). Shared by the live
    path and ``replay``."""
    return input_estimate, output_reserved if 200 <= status < 300 else 0
