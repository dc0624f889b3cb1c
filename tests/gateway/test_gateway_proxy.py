"""The streaming reverse proxy, through httpx.ASGITransport and on real loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydraguard.gateway.app import GatewayConfig, create_gateway
from hydraguard.gateway.mock import create_mock_app
from hydraguard.gateway.proxy import UpstreamProxy, create_proxy_app

Serve = Callable[[ASGIApp], Awaitable[str]]
GUARD = 10  # seconds: only bounds a hang when the behaviour under test is broken


@asynccontextmanager
async def proxied(
    upstream: str, client: tuple[str, int] = ("198.51.100.7", 4321), **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a proxy app in process; the proxy's upstream client is closed after."""
    app = create_proxy_app(upstream, **options)
    transport = httpx.ASGITransport(app=app, client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http
    finally:
        await app.state.proxy.aclose()


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Upstream that answers with what it received, plus hop-by-hop response headers."""
    assert scope["type"] == "http"
    body, messages = b"", 0
    while True:
        message = await receive()
        messages += 1 if message.get("body") else 0
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    seen = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body_length": len(body),
        "body_messages": messages,  # non-empty ones
    }
    headers = [
        (b"content-type", b"application/json"),
        (b"connection", b"keep-alive, x-hop-only"),
        (b"keep-alive", b"timeout=5"),
        (b"x-hop-only", b"1"),
        (b"proxy-authenticate", b"Basic"),
        (b"trailer", b"x-checksum"),
        (b"x-kept", b"yes"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


def header_map(seen: dict[str, Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        result.setdefault(name, []).append(value)
    return result


async def test_request_hop_by_hop_dropped_and_forwarded_headers_added() -> None:
    transport = httpx.ASGITransport(app=echo)
    async with proxied("http://upstream.test", transport=transport) as http:
        response = await http.post(
            "/v1/chat/completions",
            content=b"{}",
            headers={
                "connection": "x-private",
                "x-private": "secret",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic abc",
                "upgrade": "h2c",
                "trailer": "x-checksum",
                "x-forwarded-for": "203.0.113.1",
                "x-account-id": "acct-1",
            },
        )
    assert response.status_code == 201
    headers = header_map(response.json())
    for dropped in [
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "trailer",
    ]:
        assert dropped not in headers
    assert headers["host"] == ["upstream.test"]
    assert headers["x-account-id"] == ["acct-1"]
    assert headers["x-forwarded-for"] == ["203.0.113.1, 198.51.100.7"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["gateway.test"]
    assert headers["content-length"] == ["2"]


async def test_response_hop_by_hop_dropped_end_to_end_kept() -> None:
    transport = httpx.ASGITransport(app=echo)
    async with proxied("http://upstream.test", transport=transport) as http:
        response = await http.get("/anything")
    assert response.status_code == 201
    for dropped in ["connection", "keep-alive", "x-hop-only", "proxy-authenticate", "trailer"]:
        assert dropped not in response.headers
    assert response.headers["x-kept"] == "yes"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_path_and_query_appended_to_base_prefix() -> None:
    transport = httpx.ASGITransport(app=echo)
    async with proxied("http://upstream.test/api/", transport=transport) as http:
        response = await http.get("/v1/x%20y/z?a=1&b=%2F")
    seen = response.json()
    assert (seen["method"], seen["raw_path"], seen["query"]) == (
        "GET",
        "/api/v1/x%20y/z",
        "a=1&b=%2F",
    )
    headers = header_map(seen)
    assert "content-length" not in headers and "transfer-encoding" not in headers


async def test_request_body_streamed_not_buffered() -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 65536

    transport = httpx.ASGITransport(app=echo)
    async with proxied("http://upstream.test", transport=transport) as http:
        response = await http.post("/v1/messages", content=upload())
    seen = response.json()
    assert seen["body_length"] == 3 * 65536
    assert seen["body_messages"] == 3  # relayed piece by piece, not gathered first
    assert header_map(seen)["transfer-encoding"] == ["chunked"]


async def test_content_encoding_passes_through_untouched() -> None:
    packed = gzip.compress(b"hello " * 1000)
    upstream = Response(packed, headers={"content-encoding": "gzip"}, media_type="text/plain")
    async with proxied("http://upstream.test", transport=httpx.ASGITransport(app=upstream)) as http:
        async with http.stream("GET", "/v1/models") as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(packed))
    assert raw == packed


async def test_mock_error_envelope_relayed() -> None:
    transport = httpx.ASGITransport(app=create_mock_app())
    async with proxied("http://upstream.test", transport=transport) as http:
        response = await http.post("/v1/chat/completions", content=b"{oops")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/v1/chat/completions", lambda r: r.json()["error"]["type"] == "server_error"),
        ("/v1/messages", lambda r: r.json()["error"]["type"] == "api_error"),
        (
            "/health",
            lambda r: (
                r.headers["content-type"] == "application/problem+json"
                and r.json()["status"] == 502
            ),
        ),
    ],
    ids=["openai", "anthropic", "problem"],
)
async def test_closed_upstream_port_is_502(
    path: str, check: Callable[[httpx.Response], bool]
) -> None:
    async with proxied(f"http://127.0.0.1:{closed_port()}") as http:
        response = await http.post(path, json={})
    assert response.status_code == 502
    assert check(response)


async def test_error_response_is_injectable() -> None:
    calls: list[tuple[str, int, str]] = []

    def error_response(path: str, status: int, message: str) -> Response:
        calls.append((path, status, message))
        return PlainTextResponse("custom", status_code=status)

    async with proxied(f"http://127.0.0.1:{closed_port()}", error_response=error_response) as http:
        response = await http.get("/v1/models")
    assert (response.status_code, response.text) == (502, "custom")
    assert [(path, status) for path, status, _ in calls] == [("/v1/models", 502)]


def gated_upstream(
    first: bytes, rest: bytes, gate: asyncio.Event, events: dict[str, asyncio.Event]
) -> ASGIApp:
    """Upstream that sends ``first``, waits for ``gate``, then sends ``rest``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        waiter = asyncio.ensure_future(gate.wait())
        disconnect = asyncio.ensure_future(disconnected())
        done, pending = await asyncio.wait(
            {waiter, disconnect}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if disconnect in done:
            events["saw_disconnect"].set()
            return
        await send({"type": "http.response.body", "body": rest})
        events["finished"].set()

    return app


async def test_stream_reaches_client_before_upstream_finishes(serve: Serve) -> None:
    gate, events = asyncio.Event(), {"finished": asyncio.Event()}
    upstream = await serve(gated_upstream(b"data: one\n\n", b"data: two\n\n", gate, events))
    gateway = await serve(create_proxy_app(upstream))
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{gateway}/v1/chat/completions", json={}) as response:
            chunks = response.aiter_raw()
            first = await asyncio.wait_for(anext(chunks), GUARD)
            assert first == b"data: one\n\n"
            assert not events["finished"].is_set()
            gate.set()
            rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"data: two\n\n"
    assert events["finished"].is_set()


async def test_client_disconnect_closes_upstream_response(serve: Serve) -> None:
    gate, events = asyncio.Event(), {"saw_disconnect": asyncio.Event()}
    upstream = await serve(gated_upstream(b"data: one\n\n", b"", gate, events))
    gateway = await serve(create_proxy_app(upstream))
    try:
        async with httpx.AsyncClient() as http:
            async with http.stream("GET", f"{gateway}/v1/stream") as response:
                await asyncio.wait_for(anext(response.aiter_raw()), GUARD)
        await asyncio.wait_for(events["saw_disconnect"].wait(), GUARD)
    finally:
        gate.set()


async def test_client_leaving_before_the_upstream_answers_cancels_the_upstream_request(
    serve: Serve,
) -> None:
    # A non-streaming completion can think for minutes: the client giving up must not leave
    # the upstream generating, and the request held, until the read timeout.
    asked, left = asyncio.Event(), asyncio.Event()

    async def thinking(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        asked.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        left.set()

    upstream = await serve(thinking)
    gateway = await serve(create_proxy_app(upstream))
    async with httpx.AsyncClient() as http:
        request = asyncio.create_task(http.post(f"{gateway}/v1/chat/completions", json={}))
        await asyncio.wait_for(asked.wait(), GUARD)
        request.cancel()  # closes the client's connection
    await asyncio.wait_for(left.wait(), GUARD)


class _Tracked(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"late"

    async def aclose(self) -> None:
        self.closed = True


async def test_an_answer_arriving_as_the_request_is_cancelled_is_closed() -> None:
    """The race where the upstream's headers arrive just as the request is cancelled: the
    answer must be closed, or its pooled connection stays checked out."""
    body = _Tracked()
    task: asyncio.Task[None] | None = None

    async def answer(request: httpx.Request) -> httpx.Response:
        assert task is not None
        task.cancel()  # the cancellation lands while the answer is on its way
        return httpx.Response(200, stream=body)

    proxy = UpstreamProxy("http://upstream.test", transport=httpx.MockTransport(answer))
    waiting = asyncio.Event()

    async def receive() -> Message:
        if not waiting.is_set():
            waiting.set()
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing may be sent: {message['type']}")

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "headers": []}  # fmt: skip
    task = asyncio.create_task(proxy(scope, receive, send))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed
    await proxy.aclose()


async def test_slow_upstream_is_504(serve: Serve) -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await release.wait()
            await PlainTextResponse("late")(scope, receive, send)

    upstream = await serve(slow)
    try:
        async with proxied(upstream, timeout=httpx.Timeout(GUARD, read=0.1)) as http:
            response = await http.post("/v1/messages", json={})
    finally:
        release.set()
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"


@asynccontextmanager
async def dying_upstream() -> AsyncIterator[str]:
    """Raw HTTP server that starts a chunked SSE response and drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_upstream_dying_mid_stream_cuts_the_client_response(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    # Ending the chunked body normally would pass the cut stream off as complete.
    caplog.set_level(logging.WARNING, logger="hydraguard.gateway")
    async with dying_upstream() as upstream:
        gateway = await serve(create_proxy_app(upstream))
        received = b""
        async with asyncio.timeout(GUARD), httpx.AsyncClient() as http:
            async with http.stream("GET", f"{gateway}/v1/chat/completions") as response:
                assert response.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    async for chunk in response.aiter_raw():
                        received += chunk
    assert received == b"data: one\n\n"
    assert any("mid-stream" in record.getMessage() for record in caplog.records)


async def test_usage_of_a_cut_stream_is_estimated_not_lost(serve: Serve) -> None:
    registry = CollectorRegistry()
    async with dying_upstream() as upstream:
        config = GatewayConfig(upstream=upstream, watch_policy=False)
        gateway = await serve(create_gateway(config, registry))
        async with asyncio.timeout(GUARD), httpx.AsyncClient() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(
                    f"{gateway}/v1/chat/completions",
                    json={
                        "model": "m",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                    headers={"x-account-id": "a"},
                )
    labels = {"policy": "default", "route": "/v1/chat/completions"}
    estimated = registry.get_sample_value(
        "hydraguard_tokens_settled_total", {**labels, "source": "estimate"}
    )
    assert estimated is not None and estimated > 0


async def test_openai_sdk_streams_through_proxy(serve: Serve) -> None:
    upstream = await serve(create_mock_app(token_delay=0.001))
    gateway = await serve(UpstreamProxy(f"{upstream}/v1"))  # bare ASGI app, own lifespan
    async with openai.AsyncOpenAI(base_url=gateway, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="hydraguard-mock",
            messages=[{"role": "user", "content": "through the gateway"}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
            usage = chunk.usage or usage
    assert len(pieces) == 10
    assert usage is not None and usage.completion_tokens == 10 and usage.prompt_tokens == 3


def test_upstream_must_be_a_base_url() -> None:
    with pytest.raises(ValueError, match="upstream"):
        UpstreamProxy("ftp://example.test")
    with pytest.raises(ValueError, match="upstream"):
        UpstreamProxy("http://example.test/?a=1")


class TrackedStream(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in (b"data: one\n\n", b"data: two\n\n"):
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_upstream_closed_when_client_send_fails() -> None:
    # ASGI 2.4 servers report a gone client by raising OSError from send, mid-body.
    stream = TrackedStream()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    proxy = UpstreamProxy("http://upstream.test", transport=transport)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": "GET",
        "scheme": "http",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "query_string": b"",
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    try:
        with pytest.raises(ClientDisconnect):
            await proxy(scope, receive, send)
    finally:
        await proxy.aclose()
    assert stream.closed


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,  # decoded, as servers give it
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 1),
    }


@pytest.mark.parametrize(
    ("path", "relayed"),
    [
        ("/v1/x/../chat/completions", False),  # httpx would send /v1/chat/completions
        ("/v1/./chat/completions", False),
        ("/v1//chat/completions", False),  # nginx's merge_slashes would serve it
        ("//v1/chat/completions", False),
        ("/v1/chat/completions/..", False),
        ("/v1/chat/completions", True),
        ("/v1/models/", True),
        ("/v1/files/a...b", True),
    ],
)
async def test_paths_the_upstream_would_resolve_elsewhere_are_refused(
    path: str, relayed: bool
) -> None:
    # HydraGuard matches its routes on this very path: a path the upstream resolves to
    # another route would be served without the limits of that route.
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, stream=httpx.ByteStream(b"{}"))  # a stream, as sockets give

    proxy = UpstreamProxy("http://upstream.test", transport=httpx.MockTransport(upstream))
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.Future()  # the client stays: nothing more until the response is sent
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await proxy(http_scope(path), receive, send)
    finally:
        await proxy.aclose()
    assert sent[0]["status"] == (200 if relayed else 400)
    assert seen == ([path] if relayed else [])
