"""Token reconciliation and slot release on the way out, on memory and on Redis:
JSON and SSE usage, streams passed through unchanged, cut streams, cancellation,
upstream errors and broken SSE."""

from __future__ import annotations

import asyncio
import json
import math
from types import SimpleNamespace
from typing import Any

import pytest

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
PROMPT = "hello there, model"  # 18 characters
MAX_TOKENS = 500
TOKENS = "tier.default.tokens.1000000/minute"
SLOTS = "tier.default.concurrency"
REQUESTS = "tier.default.requests.1000/minute"


def chat_body(**extra: Any) -> bytes:
    body = {
        "model": "m",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    return json.dumps({**body, **extra}).encode()


def input_estimate() -> int:
    """The documented heuristic: characters / 4 plus 4 per message."""
    return math.ceil(len(PROMPT) / 4) + 4


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def openai_delta(text: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


def anthropic_delta(text: str) -> bytes:
    return sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        "content_block_delta",
    )


def scope_for(kit: SimpleNamespace, path: str, account: str) -> dict[str, Any]:
    return kit.http_scope(
        path, headers=[(b"x-account-id", account.encode()), (b"content-type", b"application/json")]
    )


@pytest.mark.parametrize(
    ("path", "reply", "used"),
    [
        pytest.param(
            CHAT, {"usage": {"prompt_tokens": 31, "completion_tokens": 9}}, 40, id="openai"
        ),
        pytest.param(
            MESSAGES,
            {"usage": {"input_tokens": 20, "output_tokens": 15, "cache_read_input_tokens": 5}},
            40,
            id="anthropic-with-cache-reads",
        ),
    ],
)
async def test_json_usage_replaces_the_reservation(
    guarded: Any, kit: SimpleNamespace, path: str, reply: Any, used: int
) -> None:
    g = await guarded(kit.streaming_json_app(reply), kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, path, "j"), chat_body())
    assert sent[0]["status"] == 200
    # The JSON arrived in 7-byte pieces and still passed through unchanged.
    assert json.loads(b"".join(kit.body_chunks(sent))) == reply
    usage = await g.usage("j")
    assert usage[TOKENS] == used
    assert usage[SLOTS] == 0


async def test_openai_sse_final_usage_chunk_and_stream_unchanged(
    guarded: Any, kit: SimpleNamespace
) -> None:
    chunks = [
        openai_delta("Hel"),
        openai_delta("lo"),
        sse({"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 300}}),
        sse("[DONE]"),
    ]
    g = await guarded(kit.sse_app(chunks), kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "o"), chat_body(stream=True))
    assert kit.body_chunks(sent) == [*chunks, b""]  # chunk by chunk, byte for byte
    usage = await g.usage("o")
    assert usage[TOKENS] == 321 and usage[SLOTS] == 0


async def test_anthropic_sse_message_start_and_delta(guarded: Any, kit: SimpleNamespace) -> None:
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 25, "output_tokens": 1}},
    }
    chunks = [
        sse(start, "message_start"),
        anthropic_delta("Hi"),
        anthropic_delta(" there"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 40},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    g = await guarded(kit.sse_app(chunks), kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, MESSAGES, "an"), chat_body(stream=True))
    assert kit.body_chunks(sent) == [*chunks, b""]
    usage = await g.usage("an")
    assert usage[TOKENS] == 65 and usage[SLOTS] == 0


@pytest.mark.parametrize(
    ("path", "delta"),
    [
        pytest.param(CHAT, openai_delta, id="openai"),
        pytest.param(MESSAGES, anthropic_delta, id="anthropic"),
    ],
)
async def test_stream_cut_without_usage_charges_the_estimate(
    guarded: Any, kit: SimpleNamespace, path: str, delta: Any
) -> None:
    texts = ["a" * 17, "b" * 23]  # 40 characters streamed = 10 tokens by the heuristic
    g = await guarded(kit.sse_app([delta(t) for t in texts]), kit.base_policy())
    await kit.call_asgi(g.guard, scope_for(kit, path, "cut"), chat_body(stream=True))
    charged = (await g.usage("cut"))[TOKENS]
    assert charged == input_estimate() + 10
    assert 0 < charged < input_estimate() + MAX_TOKENS


async def test_cancelled_client_mid_stream_releases_the_slot(
    guarded: Any, kit: SimpleNamespace
) -> None:
    hold, first_sent = asyncio.Event(), asyncio.Event()
    chunks = [openai_delta("x" * 20), openai_delta("never sent")]
    g = await guarded(
        kit.sse_app(chunks, hold=hold, sent=first_sent), kit.base_policy(concurrency=1)
    )
    task = asyncio.create_task(
        kit.call_asgi(g.guard, scope_for(kit, CHAT, "cx"), chat_body(stream=True))
    )
    await first_sent.wait()
    assert (await g.usage("cx"))[SLOTS] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usage = await g.usage("cx")
    assert usage[SLOTS] == 0
    # Charged what was streamed before the cut: the input and 20 characters (5 tokens).
    assert usage[TOKENS] == input_estimate() + 5


async def test_no_slot_leaks_over_many_cancelled_requests(
    guarded: Any, kit: SimpleNamespace
) -> None:
    limit = 3
    streaming: list[int] = []
    all_streaming = asyncio.Event()

    async def stalls(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": openai_delta("x"), "more_body": True})
        streaming.append(1)
        if len(streaming) % limit == 0:
            all_streaming.set()
        await asyncio.Event().wait()  # until cancelled

    g = await guarded(stalls, kit.base_policy(concurrency=limit))
    for _round in range(10):
        all_streaming.clear()
        tasks = [
            asyncio.create_task(kit.call_asgi(g.guard, scope_for(kit, CHAT, "many"), chat_body()))
            for _ in range(limit)
        ]
        await all_streaming.wait()  # every slot is held by a live stream
        over = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "many"), chat_body())
        assert over[0]["status"] == 429
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (await g.usage("many"))[SLOTS] == 0
    assert (await g.usage("many"))[REQUESTS] == 10 * limit


async def test_upstream_exception_releases_slot_and_charges_input(
    guarded: Any, kit: SimpleNamespace
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("upstream exploded")

    g = await guarded(broken, kit.base_policy(concurrency=1))
    for _ in range(3):  # with a leaked slot the second attempt would be refused
        with pytest.raises(RuntimeError, match="upstream exploded"):
            await kit.call_asgi(g.guard, scope_for(kit, CHAT, "boom"), chat_body())
        await g.guard.drain()  # Redis settles in the background
    usage = await g.usage("boom")
    assert usage[SLOTS] == 0
    assert usage[TOKENS] == 3 * input_estimate()


async def test_upstream_error_status_charges_input_only(guarded: Any, kit: SimpleNamespace) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        body = b'{"error": {"message": "overloaded"}}'
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    g = await guarded(failing, kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "e"), chat_body())
    assert sent[0]["status"] == 503
    assert (await g.usage("e"))[TOKENS] == input_estimate()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param([b"this is not sse at all\n\n", b": comment\n\n"], id="garbage-lines"),
        pytest.param([b"data: {not json\n\n", b'data: {"choices": 5}\n\n'], id="invalid-json"),
        pytest.param([b"data: " + b"y" * (2 * 1024 * 1024) + b"\n\n"], id="huge-line"),
        pytest.param([b'data: {"usage": {"prompt_tokens": "many"}}\n\n'], id="bad-usage-types"),
    ],
)
async def test_broken_sse_passes_through_and_falls_back_to_the_estimate(
    guarded: Any, kit: SimpleNamespace, garbage: list[bytes]
) -> None:
    chunks = [openai_delta("abcd" * 3), *garbage, openai_delta("efgh")]  # 16 characters = 4 tokens
    g = await guarded(kit.sse_app(chunks), kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "br"), chat_body(stream=True))
    assert sent[0]["status"] == 200
    assert kit.body_chunks(sent) == [*chunks, b""]
    usage = await g.usage("br")
    assert usage[TOKENS] == input_estimate() + 4
    assert usage[SLOTS] == 0


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"prompt_tokens": 1e30, "completion_tokens": 3}, id="huge-float"),
        pytest.param({"prompt_tokens": 5, "completion_tokens": 10**30}, id="huge-int"),
        pytest.param({"prompt_tokens": 2**53 + 1, "completion_tokens": 3}, id="past-2^53"),
        pytest.param({"prompt_tokens": -5, "completion_tokens": 3}, id="negative"),
        pytest.param({"prompt_tokens": "5", "completion_tokens": "3"}, id="strings"),
        pytest.param({"prompt_tokens": None, "completion_tokens": None}, id="nulls"),
        pytest.param({"prompt_tokens": True, "completion_tokens": False}, id="booleans"),
        pytest.param({"prompt_tokens": [5], "completion_tokens": {"n": 3}}, id="containers"),
        pytest.param({}, id="missing"),
        pytest.param([5, 3], id="usage-a-list"),
        pytest.param("5 3", id="usage-a-string"),
    ],
)
async def test_usage_that_is_no_count_is_ignored_and_the_estimate_applies(
    guarded: Any, kit: SimpleNamespace, usage: Any
) -> None:
    reply = {"usage": usage}
    g = await guarded(kit.streaming_json_app(reply), kit.base_policy(concurrency=1))
    for _ in range(2):  # a leaked slot would refuse the second
        sent = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "nc"), chat_body())
        assert sent[0]["status"] == 200
        await g.guard.drain()
    usage_now = await g.usage("nc")
    assert usage_now[SLOTS] == 0
    size = len(json.dumps(reply))
    assert usage_now[TOKENS] == 2 * (input_estimate() + math.ceil(size / 4))


async def test_fractional_usage_counts_are_truncated(guarded: Any, kit: SimpleNamespace) -> None:
    reply = {"usage": {"prompt_tokens": 7.9, "completion_tokens": 3.2}}
    g = await guarded(kit.streaming_json_app(reply), kit.base_policy())
    await kit.call_asgi(g.guard, scope_for(kit, CHAT, "fr"), chat_body())
    assert (await g.usage("fr"))[TOKENS] == 10


async def test_json_body_without_usage_is_estimated_from_its_size(
    guarded: Any, kit: SimpleNamespace
) -> None:
    reply = {"choices": [{"message": {"content": "z" * 100}}]}
    g = await guarded(kit.streaming_json_app(reply), kit.base_policy())
    await kit.call_asgi(g.guard, scope_for(kit, CHAT, "nu"), chat_body())
    size = len(json.dumps(reply))
    assert (await g.usage("nu"))[TOKENS] == input_estimate() + math.ceil(size / 4)


def encoding_app(seen: list[list[bytes]], encoding: bytes | None, reply: bytes) -> Any:
    """Answers ``reply`` in ``encoding`` whatever was asked; records the Accept-Encoding lines."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append([v for k, v in scope["headers"] if k == b"accept-encoding"])
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        if encoding is not None:
            headers.append((b"content-encoding", encoding))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    return app


async def test_the_upstream_is_asked_only_for_codings_whose_usage_we_read(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """A client asking for br would otherwise get a body whose usage cannot be read."""
    import gzip

    seen: list[list[bytes]] = []
    usage = json.dumps({"usage": {"prompt_tokens": 31, "completion_tokens": 9}}).encode()
    g = await guarded(encoding_app(seen, b"gzip", gzip.compress(usage)), kit.base_policy())
    scope = scope_for(kit, CHAT, "enc")
    scope["headers"] += [(b"accept-encoding", b"br, zstd"), (b"accept-encoding", b"gzip;q=0.5")]
    sent = await kit.call_asgi(g.guard, scope, chat_body())
    assert sent[0]["status"] == 200
    assert seen == [[b"gzip;q=0.5"]]
    assert (await g.usage("enc"))[TOKENS] == 40


async def test_a_body_in_a_coding_we_cannot_read_is_charged_its_reservation(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """An upstream that answers br although not asked: its 20 compressed bytes would stand
    for 5 tokens; what was reserved (the prompt's estimate and max_tokens) is charged."""
    seen: list[list[bytes]] = []
    g = await guarded(encoding_app(seen, b"br", b"\x1b" * 20), kit.base_policy())
    scope = scope_for(kit, CHAT, "enc-br")
    scope["headers"].append((b"accept-encoding", b"br"))
    sent = await kit.call_asgi(g.guard, scope, chat_body())
    assert sent[0]["status"] == 200
    assert seen == [[b"identity"]]
    assert (await g.usage("enc-br"))[TOKENS] == input_estimate() + MAX_TOKENS
    assert (await g.usage("enc-br"))[SLOTS] == 0


@pytest.mark.parametrize("streamed", [True, False], ids=["sse", "json"])
async def test_a_fault_in_reading_usage_costs_neither_the_response_nor_the_settlement(
    guarded: Any, kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """A bug met while reading usage (here the dialect's parsing raising on every answer)
    must not cut the response off nor skip settling: the client gets every byte, the slot
    comes back, and since the usage could not be read the whole reservation is charged."""
    from hydraguard.inspect.openai_chat import OpenAIChat

    def broken(*args: Any) -> Any:
        raise RuntimeError("a usage parser bug")

    monkeypatch.setattr(OpenAIChat, "stream_event" if streamed else "usage", broken)
    reply = {"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 300}}
    if streamed:
        chunks = [openai_delta("Hel"), openai_delta("lo"), sse(reply), sse("[DONE]")]
        app = kit.sse_app(chunks)
    else:
        app = kit.streaming_json_app(reply)
    g = await guarded(app, kit.base_policy())
    sent = await kit.call_asgi(g.guard, scope_for(kit, CHAT, "fault"), chat_body(stream=streamed))
    assert sent[0]["status"] == 200
    if streamed:
        assert kit.body_chunks(sent) == [*chunks, b""]
    else:
        assert json.loads(b"".join(kit.body_chunks(sent))) == reply
    usage = await g.usage("fault")
    assert usage[TOKENS] == input_estimate() + MAX_TOKENS
    assert usage[SLOTS] == 0
