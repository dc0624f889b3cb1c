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
        ({"max_tokens": "ten", "n": 0, "stream": "maybe"}, None, 1, False),
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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # What pydantic-based upstreams (vLLM, SGLang) accept: the detectors must see it too.
        ({"max_tokens": "1", "n": "4", "stream": "true"}, (1, 4, True, False, None)),
        ({"logprobs": 1, "top_logprobs": "5"}, (None, 1, False, True, 5)),
        ({"logprobs": "yes"}, (None, 1, False, True, None)),
        ({"logprobs": 5}, (None, 1, False, True, 5)),  # legacy completions: top 5
        ({"logprobs": 0}, (None, 1, False, False, None)),
        # Legacy completions: 0 still returns the sampled (with echo, the prompt's) logprobs.
        ({"prompt": "x", "logprobs": 0, "echo": True}, (None, 1, False, True, None)),
        ({"prompt_logprobs": 3}, (None, 1, False, True, 3)),  # vLLM
        ({"prompt_logprobs": 0}, (None, 1, False, True, None)),
        ({"prompt_logprobs": None}, (None, 1, False, False, None)),
        ({"top_logprobs": 20}, (None, 1, False, True, 20)),  # top_logprobs alone asks too
    ],
)
def test_openai_reads_the_spellings_a_lax_upstream_accepts(
    body: dict, expected: tuple[int | None, int, bool, bool, int | None]
) -> None:
    facts = OPENAI.parse(body)
    assert (facts.max_tokens, facts.n, facts.stream, facts.logprobs, facts.top_logprobs) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("0.7", 0.7), (" 1 ", 1.0), ("nan", None), ("hot", None)]
)
def test_temperature_as_a_string_counts_when_it_is_a_finite_number(
    value: str, expected: float | None
) -> None:
    assert OPENAI.parse({"temperature": value}).temperature == expected
    assert ANTHROPIC.parse({"temperature": value}).temperature == expected


def test_openai_reads_legacy_completions_prompts() -> None:
    facts = OPENAI.parse(
        {"prompt": ["Think step by step: 2+2?", "again"], "suffix": "END", "max_tokens": 9}
    )
    assert facts.prompt == "Think step by step: 2+2?\nagain\nEND"
    assert facts.max_tokens == 9 and facts.prompt_tokens == 0
    # Token ids cannot be read, but they are input: the estimate counts one per id.
    ids = OPENAI.parse({"prompt": [[1, 2, 3], [4, 5]]})
    assert ids.prompt == "" and ids.prompt_tokens == 5
    assert estimate_input_tokens(ids, 4, 4) == 5
    assert OPENAI.parse({"prompt": [7] * 40}).prompt_tokens == 40


def test_openai_counts_tool_call_arguments_as_input() -> None:
    facts = OPENAI.parse(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "f", "arguments": "ARGS"}},
                        "junk",
                    ],
                    "function_call": {"name": "g", "arguments": "LEGACY"},
                },
                {"role": "tool", "tool_call_id": "1", "content": "RESULT"},
            ]
        }
    )
    # Counted in the estimate (they are input), not read by the detectors (they are data).
    assert facts.prompt.split("\n") == ["go", "", "RESULT"]
    assert facts.extra_chars == len("ARGS") + len("LEGACY")
    assert estimate_input_tokens(facts, 1, 0) == len("go\n\nRESULT") + 10


def test_anthropic_counts_text_nested_in_tool_results_and_documents() -> None:
    nested = [
        {"type": "tool_result", "tool_use_id": "t", "content": "TOOL-STRING"},
        {
            "type": "tool_result",
            "tool_use_id": "u",
            "content": [{"type": "text", "text": "TOOL-BLOCK"}],
        },
        {"type": "document", "source": {"type": "text", "data": "DOC-TEXT"}},
        {
            "type": "document",
            "source": {"type": "content", "content": [{"type": "text", "text": "DOC-PART"}]},
        },
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},  # not text
        {"type": "search_result", "content": [{"type": "text", "text": "FOUND"}]},
    ]
    facts = ANTHROPIC.parse(
        {
            "system": [{"type": "text", "text": "SYS"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "ASK"}, *nested]}],
        }
    )
    assert facts.prompt == "SYS\nASK"
    hidden = ("TOOL-STRING", "TOOL-BLOCK", "DOC-TEXT", "DOC-PART", "FOUND")
    assert facts.extra_chars == sum(map(len, hidden))
    # Before, a prompt moved into a tool result or a document was estimated at nothing.
    assert estimate_input_tokens(facts, 1, 0) == len("SYS\nASK") + sum(map(len, hidden))


def test_anthropic_reads_the_spellings_a_lax_upstream_accepts() -> None:
    facts = ANTHROPIC.parse({"max_tokens": "1", "stream": "true"})
    assert facts.max_tokens == 1 and facts.stream


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


def test_openai_stream_without_usage_counts_every_kind_of_output() -> None:
    # An upstream that sends no usage is charged what it visibly streamed: the reasoning
    # and tool-call arguments are output too, and legacy completions stream choice text.
    tally = StreamTally()
    for delta in (
        {"reasoning_content": "abcd"},  # vLLM, DeepSeek
        {"reasoning": "efgh"},  # OpenRouter
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}, "junk"]},
        {"refusal": "no"},
        {"content": "hi", "tool_calls": None},
    ):
        OPENAI.stream_event({"choices": [{"delta": delta}]}, tally)
    OPENAI.stream_event({"choices": [{"index": 0, "text": "legacy"}]}, tally)
    assert (tally.deltas, tally.chars) == (6, 4 + 4 + 7 + 2 + 2 + 6)
    assert tally.input_tokens is None and tally.output_tokens is None
