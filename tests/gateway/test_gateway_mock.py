"""The built-in mock model, through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hydraguard.gateway import mock as mock_module
from hydraguard.gateway.mock import create_mock_app
from hydraguard.gateway.mock_reply import MAX_REPLY_TOKENS, MIN_REPLY_TOKENS

ParseSSE = Callable[[str], list[tuple[str | None, Any]]]

OPENAI_MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "tell me a story please"},
]
OPENAI_PROMPT_TOKENS = 7
ANTHROPIC_BODY = {
    "model": "claude-test",
    "system": "be brief",
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}],
        }
    ],
}
ANTHROPIC_INPUT_TOKENS = 5


async def chat(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"messages": OPENAI_MESSAGES, **fields})


async def test_openai_reply_is_deterministic_with_exact_usage(
    mock_client: httpx.AsyncClient,
) -> None:
    first = (await chat(mock_client, model="gpt-test")).json()
    second = (await chat(mock_client, model="gpt-test")).json()
    text = first["choices"][0]["message"]["content"]
    assert text == second["choices"][0]["message"]["content"]
    assert first["object"] == "chat.completion"
    assert first["model"] == "gpt-test"
    assert first["choices"][0]["finish_reason"] == "stop"
    words = len(text.split())
    assert MIN_REPLY_TOKENS <= words <= MAX_REPLY_TOKENS
    assert first["usage"] == {
        "prompt_tokens": OPENAI_PROMPT_TOKENS,
        "completion_tokens": words,
        "total_tokens": OPENAI_PROMPT_TOKENS + words,
    }


async def test_reply_depends_on_prompt(mock_client: httpx.AsyncClient) -> None:
    other = [{"role": "user", "content": "something else entirely"}]
    a = (await chat(mock_client)).json()["choices"][0]["message"]["content"]
    b = (await mock_client.post("/v1/chat/completions", json={"messages": other})).json()
    assert a != b["choices"][0]["message"]["content"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_openai_max_tokens_cuts_with_length(
    mock_client: httpx.AsyncClient, field: str
) -> None:
    full = (await chat(mock_client)).json()["choices"][0]["message"]["content"]
    body = (await chat(mock_client, **{field: 5})).json()
    assert body["choices"][0]["message"]["content"] == " ".join(full.split()[:5])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


async def test_openai_max_tokens_above_natural_length_stops(mock_client: httpx.AsyncClient) -> None:
    body = (await chat(mock_client, max_tokens=MAX_REPLY_TOKENS + 1)).json()
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_openai_n_choices_all_counted(mock_client: httpx.AsyncClient) -> None:
    body = (await chat(mock_client, n=3, max_tokens=50)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    lengths = [len(c["message"]["content"].split()) for c in body["choices"]]
    assert body["usage"]["completion_tokens"] == sum(lengths)


async def test_openai_stream_without_usage(
    mock_client: httpx.AsyncClient, parse_sse: ParseSSE
) -> None:
    plain = (await chat(mock_client, max_tokens=8)).json()
    response = await chat(mock_client, max_tokens=8, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) == 8 + 2  # role chunk, one chunk per token, finish chunk


async def test_openai_stream_with_usage(
    mock_client: httpx.AsyncClient, parse_sse: ParseSSE
) -> None:
    plain = (await chat(mock_client, n=2)).json()
    response = await chat(mock_client, n=2, stream=True, stream_options={"include_usage": True})
    events = parse_sse(response.text)
    assert events[-1] == (None, "[DONE]")
    final = events[-2][1]
    assert final["choices"] == [] and final["usage"] == plain["usage"]
    chunks = [data for _, data in events[:-2]]
    assert all(c["usage"] is None for c in chunks)
    for index in (0, 1):
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"][0]["index"] == index]
        text = "".join(d.get("content", "") for d in deltas)
        assert text == plain["choices"][index]["message"]["content"]


async def test_anthropic_reply_and_usage(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.post("/v1/messages", json={**ANTHROPIC_BODY, "max_tokens": 1000})
    body = response.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-test"
    assert body["stop_reason"] == "end_turn"
    [block] = body["content"]
    assert block["type"] == "text"
    assert body["usage"] == {
        "input_tokens": ANTHROPIC_INPUT_TOKENS,
        "output_tokens": len(block["text"].split()),
    }


async def test_anthropic_max_tokens_cut(mock_client: httpx.AsyncClient) -> None:
    body = (await mock_client.post("/v1/messages", json={**ANTHROPIC_BODY, "max_tokens": 3})).json()
    assert body["stop_reason"] == "max_tokens"
    assert len(body["content"][0]["text"].split()) == 3 == body["usage"]["output_tokens"]


async def test_anthropic_stream_event_sequence(
    mock_client: httpx.AsyncClient, parse_sse: ParseSSE
) -> None:
    request = {**ANTHROPIC_BODY, "max_tokens": 4}
    plain = (await mock_client.post("/v1/messages", json=request)).json()
    response = await mock_client.post("/v1/messages", json={**request, "stream": True})
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"] == {"input_tokens": ANTHROPIC_INPUT_TOKENS, "output_tokens": 1}
    assert start["content"] == [] and start["stop_reason"] is None
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == plain["content"][0]["text"]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"] == {"output_tokens": 4}


@pytest.mark.parametrize(
    ("path", "envelope"),
    [
        (
            "/v1/chat/completions",
            lambda b: (
                b["error"]["type"] == "invalid_request_error"
                and set(b["error"]) == {"message", "type", "param", "code"}
            ),
        ),
        (
            "/v1/messages",
            lambda b: b["type"] == "error" and b["error"]["type"] == "invalid_request_error",
        ),
    ],
    ids=["openai", "anthropic"],
)
@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b"\xff\xfe"], ids=["syntax", "array", "bytes"]
)
async def test_malformed_body_is_400_in_route_envelope(
    mock_client: httpx.AsyncClient, path: str, envelope: Callable[[Any], bool], content: bytes
) -> None:
    response = await mock_client.post(path, content=content)
    assert response.status_code == 400
    assert envelope(response.json())


async def test_anthropic_requires_max_tokens(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.post("/v1/messages", json=ANTHROPIC_BODY)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens: Field required"


@pytest.mark.parametrize(
    "bad", [{"max_tokens": 0}, {"max_tokens": "5"}, {"n": True}, {"messages": []}]
)
async def test_openai_invalid_fields(mock_client: httpx.AsyncClient, bad: dict[str, Any]) -> None:
    response = await mock_client.post(
        "/v1/chat/completions", json={"messages": OPENAI_MESSAGES, **bad}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == next(iter(bad))


async def test_models_lists_the_mock(mock_client: httpx.AsyncClient) -> None:
    body = (await mock_client.get("/v1/models")).json()
    assert [model["id"] for model in body["data"]] == ["hydraguard-mock"]


async def test_latency_and_token_delay_are_awaited(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(mock_module, "sleep", record)
    transport = httpx.ASGITransport(app=create_mock_app(latency=0.5, token_delay=0.01))
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        body = {**ANTHROPIC_BODY, "max_tokens": 6, "stream": True}
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 200
    assert waits == [0.5] + [0.01] * 6
