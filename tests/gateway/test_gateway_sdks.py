"""The mock served on a real loopback socket: the official SDKs parse it, events flush alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anthropic
import httpx
import openai
import pytest
from starlette.types import ASGIApp

from hydraguard.gateway import mock as mock_module
from hydraguard.gateway.mock import create_mock_app
from hydraguard.gateway.mock_reply import generate

Serve = Callable[[ASGIApp], Awaitable[str]]

PROMPT = "name three colours"
EXPECTED = generate(PROMPT, 12)  # the mock's reply for PROMPT cut to 12 tokens


async def test_openai_sdk_non_streaming(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="hydraguard-mock",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=12,
        )
    assert completion.choices[0].message.content == EXPECTED.text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 12)
    assert completion.usage.total_tokens == 15


async def test_openai_sdk_streaming_with_usage(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="hydraguard-mock",
            messages=[{"role": "user", "content": PROMPT}],
            max_completion_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
    assert text == EXPECTED.text
    assert finish == "length"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 12, 15)


async def test_openai_sdk_lists_models(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as client:
        models = [model.id async for model in client.models.list()]
    assert models == ["hydraguard-mock"]


async def test_anthropic_sdk_non_streaming(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with anthropic.AsyncAnthropic(base_url=base, api_key="x", max_retries=0) as client:
        message = await client.messages.create(
            model="hydraguard-mock",
            max_tokens=12,
            messages=[{"role": "user", "content": PROMPT}],
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == EXPECTED.text
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 12)


async def test_anthropic_sdk_streaming(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with anthropic.AsyncAnthropic(base_url=base, api_key="x", max_retries=0) as client:
        async with client.messages.stream(
            model="hydraguard-mock",
            max_tokens=12,
            messages=[{"role": "user", "content": PROMPT}],
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            message = await stream.get_final_message()
    assert len(pieces) == 12
    assert "".join(pieces) == EXPECTED.text
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 12)


async def test_anthropic_sdk_raises_on_error_envelope(serve: Serve) -> None:
    base = await serve(create_mock_app())
    async with anthropic.AsyncAnthropic(base_url=base, api_key="x", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError, match="max_tokens") as caught:
            await client.messages.create(
                model="hydraguard-mock",
                max_tokens=0,
                messages=[{"role": "user", "content": PROMPT}],
            )
    assert caught.value.status_code == 400


async def test_mock_flushes_each_event_on_a_real_socket(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold the mock at its first token delay: what the client has by then was flushed alone.
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    monkeypatch.setattr(mock_module, "sleep", held)
    base = await serve(create_mock_app(token_delay=0.01))
    body = {
        "model": "m",
        "max_tokens": 3,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    received = b""
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{base}/v1/messages", json=body) as response:
            chunks = response.aiter_raw()
            while b"event: ping" not in received:
                received += await asyncio.wait_for(anext(chunks), 10)
            assert b"content_block_delta" not in received
            gate.set()
            received += b"".join([chunk async for chunk in chunks])
    assert received.count(b"event: content_block_delta") == 3
    assert received.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
