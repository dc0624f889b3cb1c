"""Dialects: what each reads from a request, its error envelope, and usage in responses."""

from __future__ import annotations

import json

import pytest

from hydraguard.inspect.dialect import StreamTally
from hydraguard.inspect.dialects import DIALECTS, dialect_for_path
from hydraguard.inspect.facts import RequestFacts, estimate_input_tokens

OPENAI = DIALECTS["openai-chat"]
ANTHROPIC = DIALECTS["anthropic-messages"]
GENERIC = DIALECTS["generic"]


def test_openai_reads_every_extraction_relevant_field() -> None:
    facts = OPENAI.parse(
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}],
                },
                "not a message",
            ],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stream": True,
            "n": 3,
            "logprobs": True,
            "top_logprobs": 5,
            "logit_bias": {"50256": -100},
            "temperature": 0,
        }
    )
    assert facts.prompt == "Be terse.\nHi"
    assert facts.messages == 2
    assert facts.max_tokens == 20  # max_completion_tokens wins over the legacy field
    assert facts.stream and facts.n == 3
    assert facts.logprobs and facts.top_logprobs == 5 and facts.logit_bias
    assert facts.temperature == 0.0 and facts.model == "gpt-x"


@pytest.mark.parametrize(
    ("body", "max_tokens", "n", "stream"),
    [
        ({"max_tokens": "10", "n": 0, "stream": "yes"}, None, 1, False),
        ({"max_tokens": -5, "n": True}, None, 1, False),
        ({"max_tokens": True, "messages": "nope"}, None, 1, False),
        ({"max_tokens": 7.9}, 7, 1, False),
    ],
)
def test_openai_ignores_fields_of_the_wrong_type(
    body: dict, max_tokens: int | None, n: int, stream: bool
) -> None:
    facts = OPENAI.parse(body)
    assert (facts.max_tokens, facts.n, facts.stream, facts.messages) == (max_tokens, n, stream, 0)


def test_anthropic_reads_system_and_block_content() -> None:
    facts = ANTHROPIC.parse(
        {
            "model": "claude-x",
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_tokens": 64,
            "stream": True,
        }
    )
    assert facts.prompt == "You are terse.\nHello\nHi"
    assert facts.messages == 2 and facts.max_tokens == 64 and facts.stream


def test_input_estimate_is_characters_over_ratio_plus_per_message() -> None:
    facts = RequestFacts(body={}, prompt="x" * 41, messages=3)
    assert estimate_input_tokens(facts, 4.0, 4) == 11 + 12
    assert estimate_input_tokens(RequestFacts(body={}), 4.0, 4) == 1  # never zero


@pytest.mark.parametrize(
    ("dialect", "content_type", "check"),
    [
        (
            OPENAI,
            b"application/json",
            lambda d: d["error"]["type"] == "rate_limit_error" and d["error"]["param"] is None,
        ),
        (
            ANTHROPIC,
            b"application/json",
            lambda d: d["type"] == "error" and d["error"]["type"] == "rate_limit_error",
        ),
        (
            GENERIC,
            b"application/problem+json",
            lambda d: d["status"] == 429 and d["title"] == "Too Many Requests",
        ),
    ],
)
def test_error_envelopes(dialect, content_type: bytes, check) -> None:
    got_type, body = dialect.error_body(429, "slow down", "rate_limit_exceeded", {"rule": "r"})
    assert got_type == content_type
    data = json.loads(body)
    assert check(data)
    assert "slow down" in body.decode() and '"rule": "r"' in body.decode()


def test_anthropic_413_and_503_use_its_own_error_types() -> None:
    assert (
        json.loads(ANTHROPIC.error_body(413, "m", "c", {})[1])["error"]["type"]
        == "request_too_large"
    )
    assert (
        json.loads(ANTHROPIC.error_body(503, "m", "c", {})[1])["error"]["type"]
        == "overloaded_error"
    )


def test_json_usage_per_dialect() -> None:
    assert OPENAI.usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4)
    assert OPENAI.usage({"usage": {"prompt_tokens": 3}}) is None
    assert OPENAI.usage([1, 2]) is None
    anthropic = {
        "usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 10}
    }
    assert ANTHROPIC.usage(anthropic) == (13, 4)
    assert GENERIC.usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) is None


def test_stream_events_fold_into_the_tally() -> None:
    tally = StreamTally()
    OPENAI.stream_event(
        {"choices": [{"delta": {"content": "abc"}}, {"delta": {"content": ""}}]}, tally
    )
    OPENAI.stream_event({"choices": [{"delta": {"role": "assistant"}}]}, tally)
    OPENAI.stream_event("garbage", tally)
    assert (tally.chars, tally.deltas, tally.output_tokens) == (3, 1, None)
    OPENAI.stream_event(
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}}, tally
    )
    assert (tally.input_tokens, tally.output_tokens) == (5, 6)

    tally = StreamTally()
    ANTHROPIC.stream_event(
        {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
        tally,
    )
    ANTHROPIC.stream_event(
        {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        tally,
    )
    ANTHROPIC.stream_event({"type": "message_delta", "usage": {"output_tokens": 12}}, tally)
    ANTHROPIC.stream_event(
        {"type": "message_delta", "usage": {"output_tokens": 30}}, tally
    )  # cumulative
    assert (tally.input_tokens, tally.output_tokens, tally.chars) == (9, 30, 3)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/messages", "anthropic-messages"),
        ("/openai/v1/chat/completions", "openai-chat"),
        ("/v1/completions", "openai-chat"),
        ("/v1/embeddings", "generic"),
    ],
)
def test_dialect_for_unrouted_paths(path: str, name: str) -> None:
    assert dialect_for_path(path).name == name
