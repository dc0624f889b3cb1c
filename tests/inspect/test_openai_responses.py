"""The OpenAI Responses dialect: request fields, usage in JSON and streams, rewrites; and
end to end through the middleware in front of the mock model, which speaks the API."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest

from hydraguard.gateway.mock import create_mock_app
from hydraguard.inspect.dialect import StreamTally
from hydraguard.inspect.dialects import DIALECTS, dialect_for_path
from hydraguard.inspect.rewrite import rewrite_request
from hydraguard.observe.usage import UsageReader

RESPONSES = DIALECTS["openai-responses"]
SSE = [(b"content-type", b"text/event-stream")]


def test_instructions_and_message_items_are_the_prompt() -> None:
    facts = RESPONSES.parse(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Solve x."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Now y."}],
                },
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"q": 1}'},
                {"type": "function_call_output", "call_id": "c", "output": "tool says 42"},
                {"type": "item_reference", "id": "x"},
            ],
            "max_output_tokens": 300,
            "temperature": "0.5",
            "stream": True,
        }
    )
    assert facts.prompt == "Be brief.\nSolve x.\nNow y."
    assert facts.messages == 3  # the instructions and two messages
    assert facts.extra_chars == len('{"q": 1}') + len("tool says 42")  # counted, not read
    assert (facts.max_tokens, facts.temperature, facts.stream, facts.n) == (300, 0.5, True, 1)
    assert not facts.logprobs and not facts.logit_bias


def test_a_string_input_and_logprobs_by_include_or_top_logprobs() -> None:
    plain = RESPONSES.parse({"input": "Hello"})
    assert (plain.prompt, plain.messages, plain.max_tokens) == ("Hello", 1, None)
    included = RESPONSES.parse({"input": "x", "include": ["message.output_text.logprobs"]})
    assert included.logprobs and included.top_logprobs is None
    top = RESPONSES.parse({"input": "x", "top_logprobs": 20})
    assert top.logprobs and top.top_logprobs == 20


def test_json_usage_counts_cached_input_and_reasoning_output() -> None:
    body = {"usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 40},
                      "output_tokens": 90, "output_tokens_details": {"reasoning_tokens": 80}}}  # fmt: skip
    assert RESPONSES.usage(body) == (50, 90)
    assert RESPONSES.usage({"usage": {"input_tokens": 5}}) is None
    assert RESPONSES.usage({"usage": None}) is None


@pytest.mark.parametrize("final", ["response.completed", "response.incomplete", "response.failed"])
def test_stream_output_deltas_are_tallied_and_the_final_event_settles(final: str) -> None:
    tally = StreamTally()
    for kind, delta in [
        ("response.output_text.delta", "Hello"),
        ("response.reasoning_summary_text.delta", "think"),
        ("response.function_call_arguments.delta", "{}"),
        ("response.output_text.done", "ignored: not a delta"),
    ]:
        RESPONSES.stream_event({"type": kind, "delta": delta}, tally)
    assert (tally.deltas, tally.chars) == (3, 12)
    assert tally.output_tokens is None
    RESPONSES.stream_event(
        {"type": final, "response": {"usage": {"input_tokens": 7, "output_tokens": 3}}}, tally
    )
    assert (tally.input_tokens, tally.output_tokens) == (7, 3)


def test_an_item_or_event_type_that_is_not_a_string_is_skipped() -> None:
    # Found by tests/test_fuzz_*: a list or an object as "type" was looked up in a dict
    # or a set and raised TypeError (unhashable): a 500 for the request, and a response
    # cut off in the middle (the exception came out of the app's send).
    facts = RESPONSES.parse(
        {
            "input": [
                {"type": [1]},
                {"type": {"a": 1}},
                {"type": "function_call_output", "output": "42"},
            ]
        }
    )
    assert facts.extra_chars == 2
    tally = StreamTally()
    for event in (
        {"type": []},
        {"type": {}},
        {"type": "response.output_text.delta", "delta": "ab"},
    ):
        RESPONSES.stream_event(event, tally)
    assert (tally.deltas, tally.chars) == (1, 2)


def test_a_cap_rewrites_max_output_tokens_and_strip_drops_the_logprobs_include() -> None:
    body = {"input": "x", "max_output_tokens": 5000, "top_logprobs": 5, "stream": True,
            "include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}  # fmt: skip
    facts = RESPONSES.parse(dict(body))
    scope = {"headers": [(b"content-length", b"1")]}
    raw = json.dumps(body).encode()
    new_body, new_scope = rewrite_request(
        RESPONSES, facts, raw, scope, stream_usage=True, cap=64,
        strip=("logprobs", "top_logprobs", "logit_bias"),
    )  # fmt: skip
    sent = json.loads(new_body)
    assert sent == {"input": "x", "max_output_tokens": 64, "stream": True,
                    "include": ["reasoning.encrypted_content"]}  # fmt: skip
    assert "stream_options" not in sent  # the final event always carries usage
    assert dict(new_scope["headers"])[b"content-length"] == str(len(new_body)).encode()
    uncapped = RESPONSES.parse({"input": "x"})
    capped, _ = rewrite_request(
        RESPONSES, uncapped, b"{}", {"headers": []}, stream_usage=True, cap=9
    )
    assert json.loads(capped)["max_output_tokens"] == 9


def test_errors_use_the_openai_envelope_and_the_gateway_knows_the_path() -> None:
    content_type, body = RESPONSES.error_body(429, "slow down", "rate_limit_exceeded", {})
    assert content_type == b"application/json"
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    assert dialect_for_path("/v1/responses") is RESPONSES


# --- end to end, in front of the mock model -------------------------------------------

POLICY = """
name: responses
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/responses
    dialect: openai-responses
tiers:
  default:
    requests: 1000/minute
    tokens: 1000000/minute
    concurrency: 10
    max_output_tokens: 4096
"""
TOKENS = "tier.default.tokens.1000000/minute"
SLOTS = "tier.default.concurrency"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_usage_is_settled_from_the_mock_models_answer(
    guarded: Any, kit: SimpleNamespace, stream: bool
) -> None:
    g = await guarded(create_mock_app(), POLICY)
    body = {"model": "m", "instructions": "Be brief.", "input": "Tell me about tea.",
            "max_output_tokens": 40, "stream": stream}  # fmt: skip
    response = await g.client.post("/v1/responses", json=body, headers={"x-account-id": "r"})
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "1000"
    reader = UsageReader(RESPONSES)
    reader.start([(b"content-type", response.headers["content-type"].encode())])
    reader.feed(response.content)
    reader.finish()
    used = reader.tally.input_tokens, reader.tally.output_tokens
    assert None not in used and used[1] > 0
    usage = await g.usage("r")
    assert usage[TOKENS] == sum(used)  # not the reservation: estimate + 40
    assert sum(used) != math.ceil(len("Be brief.\nTell me about tea.") / 4) + 8 + 40
    assert usage[SLOTS] == 0


async def test_a_refusal_is_in_the_openai_envelope(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(create_mock_app(), POLICY.replace("1000/minute", "1/minute"))
    statuses = []
    for _ in range(2):
        reply = await g.client.post(
            "/v1/responses", json={"input": "hi"}, headers={"x-account-id": "r2"}
        )
        statuses.append(reply.status_code)
    assert statuses == [200, 429]
    assert reply.json()["error"]["type"] == "rate_limit_error"
