"""Strategies for upstream answers (test_fuzz_responses): SSE streams and JSON bodies of each
dialect, with valid, broken and missing usage, cut into chunks anywhere and optionally
compressed; and what the README says HydraGuard settles for them."""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from hydraguard.inspect.dialect import StreamTally
from hydraguard.inspect.dialects import DIALECTS

MAX_COUNT = 2**53
PROMPT = "Tell me a story about a fox."
RESERVED = 500  # every request's max_tokens
INPUT_ESTIMATE = math.ceil(len(PROMPT) / 4) + 4  # README: characters / 4, 4 per message
PATHS = {
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic-messages": "/v1/messages",
}


def request_body(dialect: str) -> bytes:
    """A streamed request of ``dialect``: PROMPT, at most RESERVED output tokens."""
    if dialect == "openai-responses":
        body: dict[str, Any] = {"input": PROMPT, "max_output_tokens": RESERVED}
    else:
        body = {"max_tokens": RESERVED, "messages": [{"role": "user", "content": PROMPT}]}
    return json.dumps({"model": "m", "stream": True, **body}).encode()


def documented_count(value: Any) -> int | None:
    """README: a usage count is a number from 0 to 2^53 (a fraction is cut off); anything
    else (negative, a string, null, a boolean, 1e30) is no count."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if 0 <= value <= MAX_COUNT else None


counts = st.one_of(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.floats(0, 10**6),
    st.sampled_from([0, 2**53, 2**53 + 1, -1, -0.5, 1e30, "12", None, True, False, [3], {}]),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "a", "é", "中文", "😀", "x\r\ny", "data: {}\n\n"]),
)


@dataclass
class Expected:
    """What the stream says, as the README reads it."""

    input: int | None = None
    output: int | None = None
    chars: int = 0
    deltas: int = 0

    def text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.chars += len(text)
            self.deltas += 1


@dataclass
class Answer:
    dialect: str
    sse: bool
    body: bytes  # as the app means it (decoded)
    events: list[Any] = field(default_factory=list)
    expected: Expected = field(default_factory=Expected)
    clean: bool = True  # no broken lines: ``expected`` is exactly what it says


def _openai_event(draw: st.DrawFn, said: Expected, completions: bool) -> Any:
    kind = draw(st.sampled_from(["content", "reasoning", "tool", "usage", "null-usage", "text"]))
    if kind == "usage" or kind == "null-usage":
        if kind == "null-usage":
            return {"choices": [], "usage": None}
        prompt, completion = draw(counts), draw(counts)
        found = documented_count(prompt), documented_count(completion)
        if None not in found:  # a broken count never erases a valid earlier one
            said.input, said.output = found
        return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    text = draw(texts)
    said.text(text)
    if kind == "text" or completions:
        return {"choices": [{"index": 0, "text": text}]}
    if kind == "tool":
        delta: Any = {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
    else:
        delta = {"content" if kind == "content" else "reasoning_content": text}
    return {"choices": [{"index": 0, "delta": delta}]}


def _cached(usage: dict[str, Any]) -> int | None:
    base = documented_count(usage.get("input_tokens"))
    if base is None:
        return None
    return base + sum(
        documented_count(usage.get(k)) or 0
        for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _anthropic_event(draw: st.DrawFn, said: Expected) -> Any:
    kind = draw(st.sampled_from(["start", "delta", "usage", "ping", "block", "stop"]))
    if kind == "start":
        usage = {"input_tokens": draw(counts), "output_tokens": 1}
        if draw(st.booleans()):
            usage["cache_read_input_tokens"] = draw(counts)
        found = _cached(usage)
        if found is not None:
            said.input = found
        return {"type": "message_start", "message": {"id": "m", "usage": usage}}
    if kind == "usage":
        usage = {"output_tokens": draw(counts)}
        if draw(st.booleans()):
            usage["input_tokens"] = draw(counts)
        output, found = documented_count(usage["output_tokens"]), _cached(usage)
        if output is not None:
            said.output = output
        if found is not None and (said.input is None or found > said.input):
            said.input = found
        return {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}
    if kind == "delta":
        text = draw(texts)
        said.text(text)
        name = draw(st.sampled_from(["text", "thinking", "partial_json"]))
        return {"type": "content_block_delta", "index": 0, "delta": {name: text}}
    return {"type": {"ping": "ping", "block": "content_block_start", "stop": "message_stop"}[kind]}


_RESPONSE_DELTAS = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
]


def _responses_event(draw: st.DrawFn, said: Expected) -> Any:
    kind = draw(st.sampled_from(["delta", "final", "created"]))
    if kind == "final":
        usage = {"input_tokens": draw(counts), "output_tokens": draw(counts)}
        found = documented_count(usage["input_tokens"]), documented_count(usage["output_tokens"])
        if None not in found:
            said.input, said.output = found
        name = draw(st.sampled_from(["response.completed", "response.incomplete"]))
        return {"type": name, "response": {"status": "completed", "usage": usage}}
    if kind == "delta":
        text = draw(texts)
        said.text(text)
        return {"type": draw(st.sampled_from(_RESPONSE_DELTAS)), "delta": text}
    return {"type": "response.created", "response": {"status": "in_progress"}}


# Events that are JSON but not what a dialect expects: skipped, never fatal.
odd_events = st.sampled_from(
    [{"type": []}, {"type": {}}, {"choices": 5}, {"choices": [{"delta": []}]}, [1], "x", 3, None,
     {"type": "message_start", "message": []}, {"type": "message_delta", "usage": []},
     {"type": "response.completed", "response": 7}, {"usage": {"prompt_tokens": {}}}]
)  # fmt: skip
# Lines that are not data, or data that is not JSON.
odd_lines = st.sampled_from(
    [b": keep-alive", b"event: ping", b"id: 7", b"retry: 100", b"garbage", b"data: {not json",
     b"data:", b"data: [DONE]", b"DATA: x", b"\xff\xfe", b":"]
)  # fmt: skip


@st.composite
def sse_answers(draw: st.DrawFn, dialect: str) -> Answer:
    said = Expected()
    answer = Answer(dialect, True, b"", expected=said)
    completions = draw(st.booleans())
    endings = [b"\n", b"\r\n", b"\r"]
    ending = draw(st.sampled_from([*endings, b"mixed"]))
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            lines.append(draw(odd_lines))
            answer.clean = False
            continue
        if choice == 1:
            event = draw(odd_events)
        elif dialect == "openai-chat":
            event = _openai_event(draw, said, completions)
        elif dialect == "anthropic-messages":
            event = _anthropic_event(draw, said)
        else:
            event = _responses_event(draw, said)
        answer.events.append(event)
        if draw(st.booleans()) and isinstance(event, dict) and "type" in event:
            lines.append(b"event: " + str(event["type"]).encode("utf-8", "surrogatepass"))
        text = json.dumps(
            event, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))
        )
        space = draw(st.sampled_from([b" ", b""]))
        # indent=1 splits the JSON over several data lines, joined back with LF
        lines += [b"data:" + space + line.encode() for line in text.split("\n")]
        lines.append(b"")
    if dialect == "openai-chat" and draw(st.booleans()):
        lines += [b"data: [DONE]", b""]
    if ending == b"mixed":  # a CR then an empty line's LF is one CRLF: events merge
        answer.body = b"".join(line + draw(st.sampled_from(endings)) for line in lines)
        answer.clean = False
    else:
        answer.body = b"".join(line + ending for line in lines)
    if draw(st.integers(0, 5)) == 0 and answer.body:  # cut short, anywhere
        answer.body = answer.body[: draw(st.integers(0, len(answer.body) - 1))]
        answer.clean = False
    return answer


@st.composite
def json_answers(draw: st.DrawFn, dialect: str) -> Answer:
    said = Expected()
    keys = {
        "openai-chat": ("prompt_tokens", "completion_tokens"),
        "openai-responses": ("input_tokens", "output_tokens"),
        "anthropic-messages": ("input_tokens", "output_tokens"),
    }[dialect]
    body: dict[str, Any] = {"id": "x", "content": draw(texts)}
    if draw(st.integers(0, 3)):
        usage = {keys[0]: draw(counts), keys[1]: draw(counts)}
        if dialect == "anthropic-messages" and draw(st.booleans()):
            usage["cache_creation_input_tokens"] = draw(counts)
        body["usage"] = usage
        found = (
            (
                _cached(usage)
                if dialect == "anthropic-messages"
                else documented_count(usage[keys[0]])
            ),
            documented_count(usage[keys[1]]),
        )
        if None not in found:
            said.input, said.output = found
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    answer = Answer(dialect, False, raw, expected=said)
    if draw(st.integers(0, 5)) == 0 and raw:
        answer.body = raw[: draw(st.integers(0, len(raw) - 1))]
        answer.clean = False
        said.input = said.output = None
    return answer


# Content codings as an upstream sends them: (zlib window bits, the header's value).
CODINGS = {
    b"identity": (None, b""),
    b"gzip": (31, b"gzip"),
    b"x-gzip": (31, b"x-gzip"),
    b"deflate": (15, b"deflate"),  # zlib-wrapped, as RFC 9110 says
    b"raw-deflate": (-15, b"deflate"),  # raw, as some servers send it
    b"br": (None, b"br"),  # not decoded: its usage cannot be read (sent as is here)
}


def _tricky_offsets(body: bytes) -> list[int]:
    """Cuts a reader could get wrong: inside a UTF-8 character, between CR and LF, inside
    ``data:``."""
    found = [m.start() + 1 for m in re.finditer(rb"\r\n", body)]
    found += [m.start() + k for m in re.finditer(rb"data:", body) for k in range(1, 5)]
    found += [i for i, byte in enumerate(body) if 0x80 <= byte < 0xC0]
    return found


def _cuts(draw: st.DrawFn, size: int, tricky: list[int]) -> list[int]:
    places = st.integers(0, size)
    if tricky:
        places = st.one_of(places, st.sampled_from(tricky))
    return sorted(draw(st.lists(places, max_size=24)))


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def wire_chunks(draw: st.DrawFn, body: bytes, coding: bytes) -> tuple[bytes, list[bytes]]:
    """``body`` as sent in ``coding`` (whole), and the same bytes in chunks: cut anywhere
    (empty chunks too), at tricky places, and where a compressing writer flushed (a
    streaming gzip writer flushes after each write; the flush's empty block may arrive
    as a chunk of its own, which inflates to nothing)."""
    bits = CODINGS[coding][0]
    if bits is None:
        tricky = _tricky_offsets(body) if coding == b"identity" else []
        return body, _pieces(body, _cuts(draw, len(body), tricky))
    packer = zlib.compressobj(6, zlib.DEFLATED, bits)
    flushes = sorted(set(_cuts(draw, len(body), _tricky_offsets(body))))
    parts, marks, start = [], [], 0
    for point in [*flushes, len(body)]:
        parts.append(packer.compress(body[start:point]))
        if point < len(body):
            flushed = packer.flush(zlib.Z_SYNC_FLUSH)
            parts.append(flushed)
            marks.append(sum(map(len, parts)) - 4)  # the empty block's 00 00 ff ff
        start = point
    parts.append(packer.flush())
    wire = b"".join(parts)
    # Each write arrives as a chunk of its own, cut further at random places; a flush's
    # empty block sometimes apart.
    edges = [sum(map(len, parts[:i])) for i in range(1, len(parts))]
    apart = [mark for mark in marks if draw(st.booleans())]
    cuts = sorted([*edges, *apart, *_cuts(draw, len(wire), [])])
    return wire, _pieces(wire, cuts)


def reference(answer: Answer) -> Expected:
    """What the whole, uncut answer says: an SSE stream read line by line as the spec says
    (CRLF, LF or CR end a line; an event ends at a blank line or the end), each event read
    by the dialect; a JSON body's usage."""
    dialect = DIALECTS[answer.dialect]
    if not answer.sse:
        try:
            found = dialect.usage(orjson.loads(answer.body))
        except orjson.JSONDecodeError:
            found = None
        return Expected(*found) if found is not None else Expected()
    tally = StreamTally()
    data: list[bytes] = []
    for line in [*re.split(rb"\r\n|\r|\n", answer.body), b""]:
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif not line and data:
            payload = b"\n".join(data)
            data = []
            if payload.strip() == b"[DONE]":
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            dialect.stream_event(event, tally)
    return Expected(tally.input_tokens, tally.output_tokens, tally.chars, tally.deltas)


def documented_charge(
    said: Expected, status: int, decoded: int, unreadable: bool, input_estimate: int
) -> int:
    """README, Token accounting: the usage when both counts are known; else the input (as
    reported, else estimated) plus what was visibly streamed, at least one token a delta;
    a successful body without usage ceil(bytes / 4); an undecodable successful body its
    reservation; an error with nothing streamed, no output."""
    if said.input is not None and said.output is not None:
        return said.input + said.output
    given = said.input if said.input is not None else input_estimate
    streamed = max(said.deltas, math.ceil(said.chars / 4))
    if unreadable and 0 < status < 400:
        return given + max(streamed, RESERVED)
    if streamed:
        return given + streamed
    if status >= 400 or status == 0:
        return given
    return given + math.ceil(decoded / 4)
