"""The gateway on a real socket, driven by the official SDKs and a streaming httpx client:
calls succeed through HydraGuard, a spent quota raises the SDK's RateLimitError with
hydraguard's message, the SDKs' retries wait for Retry-After, and SSE streams pass
chunk by chunk while the token reservation settles from the stream's usage."""

from __future__ import annotations

import asyncio
import itertools
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import TextBlock
from openai.types.chat import ChatCompletion
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydraguard.gateway.app import GatewayConfig, create_gateway
from hydraguard.gateway.mock_reply import count_tokens, generate

Serve = Callable[[ASGIApp], Awaitable[str]]

ADMIN_TOKEN = "admin-secret-for-tests"
REQUEST_RULE = "tier.default.requests.2/2second"
TOKEN_RULE = "tier.default.tokens.1000000/day"
PROMPT = "name three colours"

# Two requests per two seconds: the third call is refused, and a retry succeeds after a
# Retry-After of a few seconds (the SDKs honour it up to 60 s / 120 s). The day-long token
# window stays in one window for the whole test, so its usage is an exact integer.
POLICY = f"""
name: sdk-test
identity:
  account:
    - header: x-account-id
    - api_key: true
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
  - path: /v1/messages
    dialect: anthropic-messages
  - path: /v1/responses
    dialect: openai-responses
tiers:
  default:
    requests: "2 per 2 seconds"
    tokens: "1000000/day"
    concurrency: 10
    max_output_tokens: 1000
storage:
  timeout: 5
admin:
  token: {ADMIN_TOKEN}
"""


@dataclass
class Exchange:
    """One request as the gateway saw it: when it arrived and what it answered."""

    key: str
    arrived: float
    status: int = 0
    retry_after: float | None = None
    answered: float = 0.0


@dataclass
class Recorder:
    """ASGI wrapper in front of the gateway: timestamps every request and its answer."""

    app: ASGIApp
    seen: list[Exchange] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        exchange = Exchange(key=key, arrived=time.monotonic())
        self.seen.append(exchange)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.answered = time.monotonic()
                for name, value in message.get("headers", []):
                    if name.lower() == b"retry-after":
                        exchange.retry_after = float(value)
            await send(message)

        await self.app(scope, receive, recording_send)

    def of(self, key: str) -> list[Exchange]:
        return [exchange for exchange in self.seen if exchange.key == key]


@dataclass
class Gateway:
    base: str
    recorder: Recorder
    registry: CollectorRegistry


@pytest.fixture
async def gateway(serve: Serve, tmp_path: Path) -> Gateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    registry = CollectorRegistry()
    config = GatewayConfig(policy=str(policy), mock_token_delay=0.02, watch_policy=False)
    recorder = Recorder(create_gateway(config, registry=registry))
    return Gateway(await serve(recorder), recorder, registry)


def assert_waited_for_retry_after(exchanges: list[Exchange]) -> None:
    """Every 429 was followed by a retry no sooner than its Retry-After, and the last call won."""
    assert [e.status for e in exchanges][:2] == [200, 200]
    assert exchanges[2].status == 429
    assert exchanges[-1].status == 200
    for refused, retry in itertools.pairwise(exchanges[2:]):
        if refused.status != 429:
            continue
        assert refused.retry_after is not None and 0 < refused.retry_after <= 60
        # The SDK received the 429 after the gateway sent it, slept, then sent the retry.
        assert retry.arrived - refused.answered >= refused.retry_after - 0.01


# --- openai -------------------------------------------------------------------------------


async def chat(client: openai.AsyncOpenAI) -> ChatCompletion:
    return await client.chat.completions.create(
        model="hydraguard-mock", messages=[{"role": "user", "content": PROMPT}], max_tokens=12
    )


async def test_openai_sdk_calls_then_rate_limit_error(gateway: Gateway) -> None:
    expected = generate(PROMPT, 12)
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.base}/v1", api_key="k-openai-limited", max_retries=0
    ) as client:
        completion = await chat(client)
        assert completion.choices[0].message.content == expected.text
        assert completion.usage is not None and completion.usage.completion_tokens == 12

        stream = await client.chat.completions.create(
            model="hydraguard-mock",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
            usage = chunk.usage or usage
        assert text == expected.text
        assert usage is not None and usage.completion_tokens == 12

        with pytest.raises(openai.RateLimitError) as caught:
            await chat(client)
    assert caught.value.status_code == 429
    assert REQUEST_RULE in str(caught.value)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert [e.status for e in gateway.recorder.of("k-openai-limited")] == [200, 200, 429]


async def test_openai_sdk_responses_api_json_and_stream(gateway: Gateway) -> None:
    """The official SDK parses the mock's Responses API, both ways, and the tokens charged
    are the usage it reports."""
    expected = generate(PROMPT, 12)
    key = "k-openai-responses"
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.base}/v1", api_key=key, max_retries=0
    ) as client:
        response = await client.responses.create(
            model="hydraguard-mock", input=PROMPT, max_output_tokens=12
        )
        assert response.output_text == expected.text
        assert response.usage is not None and response.usage.output_tokens == 12
        texts, final = [], None
        async with await client.responses.create(
            model="hydraguard-mock", input=PROMPT, max_output_tokens=12, stream=True
        ) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    texts.append(event.delta)
                elif event.type in ("response.completed", "response.incomplete"):
                    final = event.response
        assert "".join(texts) == expected.text
        assert final is not None and final.usage is not None
    used = 2 * (count_tokens(PROMPT) + 12)
    settled = gateway.registry.get_sample_value(
        "hydraguard_tokens_settled_total",
        {"policy": "sdk-test", "route": "/v1/responses", "source": "usage"},
    )
    assert settled == used


async def test_openai_sdk_retry_waits_for_retry_after(gateway: Gateway) -> None:
    key = "k-openai-retry"
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.base}/v1", api_key=key, max_retries=2
    ) as client:
        for _ in range(2):
            await chat(client)
        started = time.monotonic()
        completion = await chat(client)
        took = time.monotonic() - started
    assert completion.choices[0].message.content == generate(PROMPT, 12).text
    exchanges = gateway.recorder.of(key)
    assert_waited_for_retry_after(exchanges)
    assert exchanges[2].retry_after is not None and took >= exchanges[2].retry_after


# --- anthropic ----------------------------------------------------------------------------


async def message(client: anthropic.AsyncAnthropic) -> AnthropicMessage:
    return await client.messages.create(
        model="hydraguard-mock", max_tokens=12, messages=[{"role": "user", "content": PROMPT}]
    )


async def test_anthropic_sdk_calls_then_rate_limit_error(gateway: Gateway) -> None:
    expected = generate(PROMPT, 12)
    async with anthropic.AsyncAnthropic(
        base_url=gateway.base, api_key="k-anthropic-limited", max_retries=0
    ) as client:
        reply = await message(client)
        assert isinstance(reply.content[0], TextBlock)
        assert reply.content[0].text == expected.text
        assert reply.usage.output_tokens == 12

        async with client.messages.stream(
            model="hydraguard-mock", max_tokens=12, messages=[{"role": "user", "content": PROMPT}]
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(pieces) == expected.text
        assert final.usage.output_tokens == 12

        with pytest.raises(anthropic.RateLimitError) as caught:
            await message(client)
    assert caught.value.status_code == 429
    assert REQUEST_RULE in str(caught.value)
    assert caught.value.body is not None and REQUEST_RULE in json.dumps(caught.value.body)
    assert [e.status for e in gateway.recorder.of("k-anthropic-limited")] == [200, 200, 429]


async def test_anthropic_sdk_retry_waits_for_retry_after(gateway: Gateway) -> None:
    key = "k-anthropic-retry"
    async with anthropic.AsyncAnthropic(
        base_url=gateway.base, api_key=key, max_retries=2
    ) as client:
        for _ in range(2):
            await message(client)
        started = time.monotonic()
        reply = await message(client)
        took = time.monotonic() - started
    assert isinstance(reply.content[0], TextBlock)
    assert reply.content[0].text == generate(PROMPT, 12).text
    exchanges = gateway.recorder.of(key)
    assert_waited_for_retry_after(exchanges)
    assert exchanges[2].retry_after is not None and took >= exchanges[2].retry_after


# --- streaming chunk by chunk, reconciled from usage ---------------------------------------


async def test_sse_reaches_the_client_progressively_and_settles_from_usage(
    gateway: Gateway,
) -> None:
    prompt = "tell me a story about rate limits"
    reply = generate(prompt, 400)  # its natural length, far below the 400 reserved
    assert not reply.cut and len(reply.words) >= 20
    body = {
        "model": "hydraguard-mock",
        "max_tokens": 400,
        "stream": True,  # no stream_options: hydraguard asks the upstream for usage itself
        "messages": [{"role": "user", "content": prompt}],
    }
    arrivals: list[tuple[float, bytes]] = []
    async with httpx.AsyncClient(base_url=gateway.base, timeout=10) as http:
        started = time.monotonic()
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"x-account-id": "streamer"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_raw():
                arrivals.append((time.monotonic() - started, chunk))

        stream = b"".join(chunk for _, chunk in arrivals).decode()
        text = ""
        for line in stream.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
        assert text == reply.text
        # Progressive: the deltas came in many reads, the first well before the last
        # (the mock waits 20 ms per token, so the whole stream takes >= 0.4 s).
        delta_times = [at for at, chunk in arrivals if b'"content":"' in chunk]
        assert len(delta_times) >= 10
        assert delta_times[-1] - delta_times[0] >= 0.3

        expected = count_tokens(prompt) + len(reply.words)
        settled = None
        for _ in range(100):  # settlement runs right after the stream ends
            account = await http.get(
                "/_hydraguard/accounts/streamer",
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert account.status_code == 200
            usage = {limit["rule"]: limit["usage"] for limit in account.json()["limits"]}
            settled = usage[TOKEN_RULE]
            if settled == expected:
                break
            await asyncio.sleep(0.02)
    assert settled == expected
    assert 0 < usage[REQUEST_RULE] <= 1  # a 2 s sliding window: it decays while we read
    labels = {"policy": "sdk-test", "route": "/v1/chat/completions"}
    by_usage = gateway.registry.get_sample_value(
        "hydraguard_tokens_settled_total", {**labels, "source": "usage"}
    )
    reserved = gateway.registry.get_sample_value("hydraguard_tokens_reserved_total", labels)
    assert by_usage == expected
    assert reserved is not None and reserved >= 400 > expected
