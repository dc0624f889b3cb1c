"""UsageReader: usage from JSON bodies and SSE streams fed in arbitrary pieces."""

from __future__ import annotations

import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from hydraguard.inspect.dialects import DIALECTS
from hydraguard.observe.usage import UsageReader

SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]


def read(dialect: str, headers, body: bytes, piece: int) -> UsageReader:
    reader = UsageReader(DIALECTS[dialect])
    reader.start(headers)
    for start in range(0, len(body), piece):
        reader.feed(body[start : start + piece])
    reader.finish()
    return reader


@pytest.mark.parametrize("piece", [1, 3, 64, 100_000])
def test_openai_sse_split_anywhere(piece: int) -> None:
    body = (
        b'data: {"choices": [{"delta": {"content": "Hello"}}]}\r\n\r\n'
        b": keep-alive\n\n"
        b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
    )
    reader = read("openai-chat", SSE, body, piece)
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
    assert reader.tally.chars == 5 and reader.bad_events == 0


def test_multi_line_data_event_and_missing_final_blank_line() -> None:
    body = (
        b'event: message_delta\ndata: {"type": "message_delta",\n'
        b'data:  "usage": {"output_tokens": 8}}'
    )
    reader = read("anthropic-messages", SSE, body, 5)
    assert reader.tally.output_tokens == 8


def test_json_body_in_pieces_and_gzip() -> None:
    payload = json.dumps({"usage": {"prompt_tokens": 4, "completion_tokens": 6}}).encode()
    assert read("openai-chat", JSON, payload, 3).tally.output_tokens == 6
    zipped = gzip.compress(payload)
    reader = read("openai-chat", [*JSON, (b"content-encoding", b"gzip")], zipped, 4)
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (4, 6)


def test_a_readable_body_without_usage_is_estimated_by_its_size() -> None:
    reader = read("openai-chat", JSON, b'{"id": "' + b"x" * 30 + b'"}', 7)
    assert reader.tally.output_tokens is None and not reader.unreadable
    assert reader.output_estimate(4.0, 200, reserved=500) == 10
    assert reader.output_estimate(4.0, 500, reserved=500) == 0  # an error with nothing streamed


@pytest.mark.parametrize("encoding", [b"br", b"zstd", b"compress", b"gzip, br"])
def test_an_undecodable_body_keeps_its_reservation(encoding: bytes) -> None:
    """Its compressed size would under-count (br shrinks text several times over)."""
    reader = read("openai-chat", [*JSON, (b"content-encoding", encoding)], b"x" * 40, 7)
    assert reader.tally.output_tokens is None and reader.unreadable
    assert reader.output_estimate(4.0, 200, reserved=500) == 500
    assert reader.output_estimate(4.0, 502, reserved=500) == 0  # an error with nothing streamed


def test_a_corrupt_gzip_stream_keeps_its_reservation() -> None:
    zipped = gzip.compress(b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n' * 50)
    broken = zipped[:40] + bytes(b ^ 0xFF for b in zipped[40:80]) + zipped[80:]
    reader = read("openai-chat", [*SSE, (b"content-encoding", b"gzip")], broken, 16)
    assert reader.unreadable
    assert reader.output_estimate(4.0, 200, reserved=500) == 500


@pytest.mark.parametrize(
    "compress",
    [
        pytest.param(zlib.compress, id="zlib-wrapped"),
        pytest.param(lambda data: zlib.compress(data)[2:-4], id="raw"),
    ],
)
@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_deflate_is_read_wrapped_or_raw(compress: Callable[[bytes], bytes], piece: int) -> None:
    payload = json.dumps({"usage": {"prompt_tokens": 4, "completion_tokens": 6}}).encode()
    headers = [*JSON, (b"content-encoding", b"deflate")]
    reader = read("openai-chat", headers, compress(payload), piece)
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (4, 6)
    assert not reader.unreadable


def test_garbage_is_counted_and_skipped() -> None:
    body = (
        b"data: {nope\n\n"
        + b"data: "
        + b"z" * (2 * 1024 * 1024)
        + b"\n\n"
        + b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\n'
    )
    reader = read("openai-chat", SSE, body, 65536)
    assert reader.bad_events == 2
    assert reader.tally.chars == 2
    assert reader.output_estimate(4.0, 200, reserved=500) == 1


def test_estimate_is_at_least_one_token_per_delta() -> None:
    body = b"".join(b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n' for _ in range(9))
    assert read("openai-chat", SSE, body, 50).output_estimate(4.0, 200, reserved=500) == 9


OPENAI_STREAM = (
    b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"choices": [],\n'
    b'data: "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_sse_line_ending_cut_at_every_offset(ending: bytes) -> None:
    # SSE ends lines with CRLF, LF or a lone CR; a CRLF may be cut between its two bytes.
    body = OPENAI_STREAM.replace(b"\n", ending)
    for cut in range(len(body) + 1):
        reader = UsageReader(DIALECTS["openai-chat"])
        reader.start(SSE)
        reader.feed(body[:cut])
        reader.feed(body[cut:])
        reader.finish()
        tally = reader.tally
        assert (tally.input_tokens, tally.output_tokens, tally.chars) == (7, 2, 5), cut
        assert reader.bad_events == 0, cut


def test_the_rest_of_an_oversized_line_is_not_read_as_a_line() -> None:
    # The line is dropped once it outgrows the bound; what follows in the same line
    # (here text that looks like a usage event) is part of it, not a line of its own.
    fake = b'data: {"choices": [], "usage": {"prompt_tokens": 999999, "completion_tokens": 1}}'
    chunks = [*OPENAI_STREAM.splitlines(True), b": " + b"x" * (1024 * 1024), fake + b"\n\n"]
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start(SSE)
    for chunk in chunks:
        reader.feed(chunk)
    reader.finish()
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
    assert reader.bad_events == 1


def peak_bytes_while(feed: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        feed()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_event_of_many_data_lines_is_bounded_and_dropped() -> None:
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start(SSE)
    line = b"data: " + b"q" * 1000 + b"\n"

    def feed() -> None:
        for _ in range(10_000):  # 10 MB in one event, no blank line
            reader.feed(line)

    assert peak_bytes_while(feed) < 3 * 1024 * 1024
    for chunk in OPENAI_STREAM.splitlines(True):
        reader.feed(chunk)
    reader.finish()
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
    assert reader.bad_events == 1


@pytest.mark.parametrize(
    ("headers", "inflated"),
    [
        pytest.param(JSON, b"[" + b" " * (64 * 1024 * 1024) + b"]", id="json"),
        pytest.param(SSE, b"data: " + b"a" * (64 * 1024 * 1024) + b"\n\n", id="sse"),
    ],
)
def test_a_compressed_body_is_inflated_within_bounds(
    headers: list[tuple[bytes, bytes]], inflated: bytes
) -> None:
    bomb = zlib.compress(inflated, 1)  # 64 MiB in a few hundred KB
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start([*headers, (b"content-encoding", b"deflate")])

    def feed() -> None:
        for start in range(0, len(bomb), 65536):
            reader.feed(bomb[start : start + 65536])
        reader.finish()

    assert peak_bytes_while(feed) < 12 * 1024 * 1024
    assert reader.tally.output_tokens is None


def test_x_gzip_is_gzip() -> None:
    payload = json.dumps({"usage": {"prompt_tokens": 4, "completion_tokens": 6}}).encode()
    reader = read(
        "openai-chat", [*JSON, (b"content-encoding", b"x-gzip")], gzip.compress(payload), 5
    )
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (4, 6)


def anthropic_stream(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)


def test_anthropic_later_broken_counts_never_erase_known_ones() -> None:
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 100}},
    }
    body = anthropic_stream(
        start,
        {"type": "message_delta", "usage": {"output_tokens": 30}},
        # cumulative input without the cache fields, then a broken output count
        {"type": "message_delta", "usage": {"input_tokens": 10, "output_tokens": None}},
        {"type": "message_delta", "usage": {"output_tokens": "many"}},
    )
    reader = read("anthropic-messages", SSE, body, 64)
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (110, 30)


def test_a_broken_message_start_never_erases_a_valid_earlier_input() -> None:
    # Found by tests/test_fuzz_responses.py: a second message_start with a broken count set
    # the input back to unknown, and the stream was settled from the estimate.
    body = anthropic_stream(
        {"type": "message_start", "message": {"usage": {"input_tokens": 10}}},
        {"type": "message_start", "message": {"usage": {"input_tokens": "x"}}},
        {"type": "message_delta", "usage": {"output_tokens": 5}},
    )
    reader = read("anthropic-messages", SSE, body, 64)
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (10, 5)


def test_a_compressed_chunk_that_inflates_to_nothing_does_not_split_a_crlf() -> None:
    # Found by tests/test_fuzz_responses.py: a streaming gzip writer flushes after every
    # write (starlette's GZipMiddleware does); when a write ended between CR and LF and the
    # flush's empty block arrived as a chunk of its own, it inflated to b"", which reset
    # the "last chunk ended with CR" state: the LF then read as a blank line and cut a
    # multi-line event in two (usage lost, the stream settled from the estimate).
    body = OPENAI_STREAM.replace(b"\n", b"\r\n")
    cut = body.index(b"\r\n", body.index(b"[],")) + 1  # inside the usage event
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = packer.compress(body[:cut]) + packer.flush(zlib.Z_SYNC_FLUSH)
    tail = packer.compress(body[cut:]) + packer.flush()
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start([*SSE, (b"content-encoding", b"gzip")])
    for chunk in (head[:-4], head[-4:], tail):  # the empty block's 00 00 ff ff alone
        reader.feed(chunk)
    reader.finish()
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
    assert reader.bad_events == 0


def _finishes_within(seconds: float, work: Callable[[], object]) -> bool:
    """Whether ``work()`` returns within ``seconds`` (a hang guard, not a speed figure: the
    inputs below held the old reader for minutes, the fixed one for well under a second)."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(), done.set()), daemon=True)
    thread.start()
    return done.wait(seconds)


USAGE_EVENT = b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'


@pytest.mark.parametrize("filler", [b"\n", b"x\n"], ids=["blank", "junk"])
def test_a_flood_of_lines_that_change_nothing_is_skipped_not_walked(filler: bytes) -> None:
    # 32 MiB of lines outside any event, in one chunk: one Python call per line cost ~1.3 us
    # a line before (~40 s here); they are dropped in one pass now, and the event after is read.
    body = filler * ((32 << 20) // len(filler)) + USAGE_EVENT
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start(SSE)
    assert _finishes_within(10.0, lambda: (reader.feed(body), reader.finish()))
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
    assert reader.bad_events == 0


def test_the_rest_of_an_oversized_event_is_skipped_to_its_end() -> None:
    # A 32 MiB event of one-byte data lines: dropped (counted once) after 1 MiB, its other
    # lines skipped to the blank line that ends it; the next event is read.
    body = b"data: x\n" * (4 << 20) + b"\n" + USAGE_EVENT
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start(SSE)
    assert _finishes_within(10.0, lambda: (reader.feed(body), reader.finish()))
    assert reader.bad_events == 1
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)


def _gzip_of_repeats(block: bytes, times: int) -> bytes:
    """A valid gzip of ``block * times``, built in O(len(block)): after a full flush the
    compressor starts afresh, so every repeat compresses to the same bytes."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    once = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (len(block) * times % (1 << 32)).to_bytes(4, "little")
    return header + once * times + raw.flush() + trailer


def test_a_compressed_stream_inflating_a_thousandfold_stops_being_read() -> None:
    event = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
    block = event * ((1 << 20) // len(event))
    bomb = _gzip_of_repeats(block, 1024)  # ~1 GiB of events from a few MB
    assert gzip.decompress(_gzip_of_repeats(block, 2)) == block * 2
    reader = UsageReader(DIALECTS["openai-chat"])
    reader.start([*SSE, (b"content-encoding", b"gzip")])
    # Before: every one of the ~20 million events was parsed inside one feed() (minutes).
    assert _finishes_within(10.0, lambda: (reader.feed(bomb), reader.finish()))
    assert reader.unreadable  # charged as an undecodable body: at least its reservation
    assert reader.output_estimate(4.0, 200, reserved=50_000_000) == 50_000_000
    assert 0 < reader.tally.deltas < 1_000_000


def test_a_long_compressed_stream_of_one_repeated_chunk_is_read_whole() -> None:
    # A model repeating one token sends identical chunks (~340x under gzip): up to 8 MiB
    # inflated, the ratio does not count, so a long completion keeps its reported usage.
    event = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
    body = gzip.compress(event * ((7 << 20) // len(event)) + USAGE_EVENT)
    reader = read("openai-chat", [*SSE, (b"content-encoding", b"gzip")], body, 1024)
    assert not reader.unreadable
    assert (reader.tally.input_tokens, reader.tally.output_tokens) == (7, 2)
