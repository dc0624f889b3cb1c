"""UsageReader: usage from JSON bodies and SSE streams fed in arbitrary pieces."""

from __future__ import annotations

import gzip
import json

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


def test_unreadable_encoding_falls_back_to_the_size_estimate() -> None:
    reader = read("openai-chat", [*JSON, (b"content-encoding", b"br")], b"x" * 40, 7)
    assert reader.tally.output_tokens is None
    assert reader.output_estimate(4.0, 200) == 10
    assert reader.output_estimate(4.0, 500) == 0  # an error with nothing streamed


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
    assert reader.output_estimate(4.0, 200) == 1


def test_estimate_is_at_least_one_token_per_delta() -> None:
    body = b"".join(b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n' for _ in range(9))
    assert read("openai-chat", SSE, body, 50).output_estimate(4.0, 200) == 9
