"""Strategies for request bodies and headers (test_fuzz_requests): arbitrary JSON, near-JSON
and dialect-shaped bodies with wrong types, and header lists of arbitrary bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Text with every code point, lone surrogates included (escaped by json.dumps, or written
# raw with surrogatepass: bytes that are not UTF-8).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
texts = st.one_of(
    st.text(max_size=40),
    st.text(max_size=40),
    st.sampled_from(["", " ", "hello", "x" * 300, "\u00e9\u4e2d\U0001f600"]),
    any_text,
)

numbers = st.one_of(
    st.integers(),  # unbounded: huge ints too
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, 2**63, 2**64 - 1, 2**64, 10**30, 1e300, 0.5]),
)
# What lax upstreams read as numbers or flags, and what they do not.
spellings = st.sampled_from(
    ["1", "0", "-1", " 5 ", "1e3", "1.5", "inf", "NaN", "true", "false", "yes", "on", "", "1" * 30,
     "1" + "0" * 400, "9" * 5000]
)  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, spellings)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
# The usual wrong types, drawn often: containers where a name or a number belongs.
wrong = st.sampled_from([None, True, False, 0, -1, 1.5, "", "x", [], {}, [1], {"a": 1}, [[]]])
params = st.one_of(wrong, scalars, json_values)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else a value of another type."""
    return st.one_of(good, good, good, params)


def items(item: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(mostly(item), max_size=4)


def kinds(*names: str) -> st.SearchStrategy[Any]:
    return mostly(st.sampled_from(names))


blocks = st.fixed_dictionaries(
    {},
    optional={
        "type": kinds("text", "tool_result", "tool_use", "document", "search_result", "image"),
        "text": mostly(texts),
        "content": st.one_of(texts, items(st.fixed_dictionaries({"text": mostly(texts)})), wrong),
        "source": st.fixed_dictionaries(
            {"type": kinds("text", "content", "base64")},
            optional={"data": mostly(texts), "content": items(st.builds(dict, text=texts))},
        ),
    },
)
tool_calls = items(
    st.fixed_dictionaries(
        {
            "function": st.fixed_dictionaries(
                {}, optional={"arguments": mostly(texts), "name": texts}
            )
        }
    )
)
messages = items(
    st.fixed_dictionaries(
        {},
        optional={
            "role": kinds("user", "assistant", "system", "tool"),
            "content": st.one_of(texts, items(blocks), params),
            "tool_calls": mostly(tool_calls),
            "function_call": mostly(st.builds(dict, arguments=params)),
        },
    )
)
responses_input = st.one_of(
    texts,
    items(
        st.fixed_dictionaries(
            {},
            optional={
                "type": kinds("message", "function_call", "function_call_output"),
                "role": mostly(texts),
                "content": st.one_of(texts, items(blocks), wrong),
                "arguments": mostly(texts),
                "output": st.one_of(texts, items(blocks), wrong),
            },
        )
    ),
    params,
)
_FIELDS = {
    "model": mostly(texts),
    "messages": mostly(messages),
    "system": st.one_of(texts, items(blocks), params),
    "prompt": st.one_of(
        texts, items(st.one_of(texts, st.integers(), items(st.integers()))), params
    ),
    "suffix": mostly(texts),
    "input": responses_input,
    "instructions": mostly(texts),
    "include": mostly(items(st.sampled_from(["message.output_text.logprobs", "reasoning"]))),
    "max_tokens": params,
    "max_completion_tokens": params,
    "max_output_tokens": params,
    "n": params,
    "logprobs": params,
    "top_logprobs": params,
    "prompt_logprobs": params,
    "logit_bias": mostly(st.dictionaries(st.text(max_size=5), numbers, max_size=3)),
    "stream": st.one_of(st.booleans(), params),
    "stream_options": mostly(
        st.fixed_dictionaries({}, optional={"include_usage": params, "other": params})
    ),
    "temperature": params,
    "echo": params,
}
dialect_bodies = st.fixed_dictionaries({}, optional=_FIELDS)


def _with(key: str) -> st.SearchStrategy[dict[str, Any]]:
    """A body that has ``key`` (the field its dialect reads most), the others optional."""
    return st.fixed_dictionaries(
        {key: _FIELDS[key]}, optional={k: v for k, v in _FIELDS.items() if k != key}
    )


_SHAPED = {
    "openai-chat": st.one_of(_with("messages"), _with("prompt")),
    "openai-responses": _with("input"),
    "anthropic-messages": _with("messages"),
}
batch_bodies = st.fixed_dictionaries(
    {},
    optional={
        "requests": mostly(
            items(
                st.fixed_dictionaries(
                    {"custom_id": texts}, optional={"params": mostly(_with("messages"))}
                )
            )
        )
    },
)


# Realistic bodies of each dialect, every kind of part they read; ``mutated`` puts a value of
# any type at a few places anywhere in them (a list where a type name belongs...).
_CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            "function_call": {"name": "f", "arguments": "{}"},
        },
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ],
    "max_tokens": 50,
    "max_completion_tokens": 40,
    "n": 2,
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
    "stream": True,
    "stream_options": {"include_usage": False},
    "temperature": 0.7,
}
_COMPLETIONS = {
    "model": "m",
    "prompt": ["say", [1, 2, 3]],
    "suffix": "end",
    "max_tokens": 5,
    "logprobs": 5,
    "echo": True,
    "prompt_logprobs": 1,
}
_RESPONSES = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "42"},
        {"type": "reasoning", "summary": []},
    ],
    "max_output_tokens": 100,
    "top_logprobs": 2,
    "include": ["message.output_text.logprobs"],
    "stream": True,
}
_MESSAGES = {
    "model": "m",
    "system": [{"type": "text", "text": "sys"}],
    "max_tokens": 100,
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "document", "source": {"type": "text", "data": "doc"}},
                {"type": "document", "source": {"type": "content", "content": [{"text": "d"}]}},
                {"type": "tool_result", "tool_use_id": "t", "content": [{"text": "r"}]},
                {"type": "search_result", "content": [{"type": "text", "text": "s"}]},
            ],
        },
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]},
    ],
    "stream": True,
    "temperature": 0.5,
}
TEMPLATES = {
    "openai-chat": [_CHAT, _COMPLETIONS],
    "openai-responses": [_RESPONSES],
    "anthropic-messages": [_MESSAGES],
    "anthropic-batches": [
        {
            "requests": [
                {"custom_id": "a", "params": _MESSAGES},
                {"custom_id": "b", "params": {"max_tokens": 7, "messages": []}},
            ]
        }
    ],
}


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _places(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _places(inner, (*path, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, dialect: str) -> Any:
    body = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES[dialect]))))
    for _ in range(draw(st.integers(1, 3))):
        places = _places(body)[1:]
        if not places:
            break
        path = draw(st.sampled_from(places))
        holder = body
        for step in path[:-1]:
            holder = holder[step]
        if draw(st.integers(0, 4)) == 0 and isinstance(holder, dict):
            del holder[path[-1]]
        else:
            holder[path[-1]] = draw(params)
    return body


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as JSON text: escaped or raw (lone surrogates then give invalid UTF-8),
    compact or spaced, or with a nested tail so deep that it only just parses."""
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 0, 2])))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def deep(draw: st.DrawFn, body: Any) -> bytes:
    """A dict body with a value nested ``depth`` deep (orjson parses up to 1024)."""
    depth = draw(st.integers(1, 1100))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "0" + closer * depth
    head = json.dumps(body) if isinstance(body, dict) and body else '{"stream": true'
    if head.endswith("}"):
        head = head[:-1] + (", " if len(head) > 2 else "")
    else:
        head += ", "
    return f'{head}"metadata": {nested}}}'.encode()


@st.composite
def mangled(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` cut, with bytes flipped or inserted: near-JSON."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "flip", "insert"]))
        if kind == "cut":
            del data[where:]
        elif kind == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


def bodies(dialect: str) -> st.SearchStrategy[bytes]:
    shaped = batch_bodies if dialect == "anthropic-batches" else dialect_bodies
    typical = _SHAPED.get(dialect, batch_bodies)
    return st.one_of(
        mutated(dialect).flatmap(encoded),
        mutated(dialect).flatmap(encoded),
        typical.flatmap(encoded),
        shaped.flatmap(encoded),
        json_values.flatmap(encoded),
        shaped.flatmap(lambda v: encoded(v).flatmap(mangled)),
        shaped.flatmap(deep),
        st.binary(max_size=64),
        st.sampled_from([b"", b" ", b"\n\t ", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b"{}{}"]),
        # past 64 KiB: parsed in a worker thread
        shaped.flatmap(encoded).map(lambda raw: raw[:-1] + b" " * 70_000 + raw[-1:]),
    )


_header_values = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=257, max_size=5000),
    st.sampled_from([b"", b" ", b"default", b"single", b"\xff\xfe", b"a" * 300]),
)
_content_lengths = st.one_of(
    st.sampled_from(
        [b"-1", b"abc", b"1e3", b" 12 ", b"0x10", b"1_0", b"9" * 5000, b"99999999999", b"0"]
    ),
    st.integers(-10, 100_000).map(lambda n: str(n).encode()),
    st.binary(max_size=8),
)
header_names = st.sampled_from(
    [
        b"x-account-id",
        b"x-account-tier",
        b"authorization",
        b"x-api-key",
        b"accept-encoding",
        b"content-type",
        b"x-forwarded-for",
        b"transfer-encoding",
        b"x-org-id",
    ]
)
headers = st.lists(
    st.one_of(
        st.tuples(header_names, _header_values),
        st.tuples(st.just(b"content-length"), _content_lengths),
        st.tuples(
            st.just(b"accept-encoding"),
            st.sampled_from([b"br", b"*", b"*;q=0", b"gzip;q=nan", b"zstd, br;q=1e400", b"\xff"]),
        ),
    ),
    max_size=6,
)


# Context headers (DESIGN.md) and credentials, their names in any letter case, some sent on
# several lines, their values ordinary or odd bytes (test_fuzz_headers).
KEY_MARK = b"sk-fuzz-"  # every API key drawn starts so, and no other value holds it
api_keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=32).map(
    lambda text: KEY_MARK + text.encode()
)
_odd = [b"", b" ", b"\t", b"\x00", b"\xff\xfe", b"a\r\nb", b" padded ", b"\x7f", b"unknown",
        b"N/A", "\u00e9".encode(), b"x" * 300]  # fmt: skip
odd_values = st.one_of(st.binary(max_size=24), st.sampled_from(_odd)).filter(
    lambda value: KEY_MARK not in value
)
_CONTEXT = {
    b"x-account-id": [b"acct-1", b"acct-2", b"Acct-1"],
    b"x-account-tier": [b"default", b"single", b"Single", b" single"],
    b"x-org-id": [b"org-1", b"org-2"],
    b"x-payment-fingerprint": [b"card-1", b"card-2"],
    b"x-device-fingerprint": [b"dev-1", b"dev-2"],
    b"x-ja4": [b"t13d1516h2_8daaf6152771_e5627efa2ab1"],
    b"user-agent": [b"curl/8.5.0"],
    b"x-forwarded-for": [b"198.51.100.7", b"10.0.0.9, 198.51.100.7", b"198.51.100.7, 10.0.0.9",
                         b"2001:db8::7", b"10.0.0.9"],
    b"content-type": [b"application/json"],
}  # fmt: skip


@st.composite
def recased(draw: st.DrawFn, name: bytes) -> bytes:
    """``name`` with each letter in either case (bit i of a mask: letter i upper)."""
    mask = draw(st.integers(0, 2 ** len(name) - 1))
    return bytes(c - 32 if mask >> i & 1 and 97 <= c <= 122 else c for i, c in enumerate(name))


def _credential(name: bytes) -> st.SearchStrategy[bytes]:
    if name == b"x-api-key":
        return st.one_of(api_keys, api_keys.map(lambda key: b" " + key + b" "), odd_values)
    schemes = st.sampled_from([b"Bearer ", b"bearer ", b"BEARER  ", b"Basic ", b"Bearer"])
    return st.one_of(st.tuples(schemes, api_keys).map(b"".join), odd_values)


_names = st.sampled_from([*_CONTEXT, b"authorization", b"x-api-key"])


@st.composite
def context_line(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name = draw(_names)
    if name in _CONTEXT:
        value = draw(st.one_of(st.sampled_from(_CONTEXT[name]), odd_values))
    else:
        value = draw(_credential(name))
    return draw(recased(name)), value


context_headers = st.lists(context_line(), max_size=8)
