"""Shared fixtures for the core tests: storages (memory and Redis), small policies,
fake upstream apps and a raw ASGI caller that records every message.

Redis is required, not optional: when it is unreachable the Redis-marked tests fail
(the flush in ``storage_uri`` raises) instead of being skipped.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocket

from hydraguard.middleware import HydraGuard
from hydraguard.policy.compiled import CompiledPolicy, compile_policy
from hydraguard.policy.loader import parse_policy
from hydraguard.storage.base import Storage
from hydraguard.storage.factory import storage_from_uri
from shared_redis import REDIS_URL

STORAGES = [
    pytest.param("memory://", id="memory"),
    pytest.param(REDIS_URL, id="redis", marks=pytest.mark.redis),
]


# storage_uri values a test module can ask for (indirect parametrization): the three-node
# Redis Cluster and the Sentinel-watched Redis of tests/storage (their fixtures), flushed.
SERVERS = {"redis-cluster": "redis_cluster", "redis-sentinel": "redis_sentinel"}


@pytest.fixture(params=STORAGES)
def storage_uri(request: pytest.FixtureRequest) -> str:
    uri: str = request.param
    if uri in SERVERS:
        servers = request.getfixturevalue(SERVERS[uri])
        servers.flush()
        return str(servers.url)
    if uri.startswith("redis"):
        # Fails (never skips) when Redis is down: CI treats skipped Redis tests as failures.
        client = redis.Redis.from_url(uri)
        try:
            client.flushdb()
        finally:
            client.close()
    return uri


@pytest.fixture
async def make_storage(storage_uri: str) -> AsyncIterator[Callable[..., Storage]]:
    """Build storages on the parametrized backend; all are closed at teardown."""
    made: list[Storage] = []

    def make(*, sliding: bool = True) -> Storage:
        storage = storage_from_uri(storage_uri, sliding=sliding, timeout=5.0)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.aclose()


# --- policies -------------------------------------------------------------------------


def compile_yaml(text: str) -> CompiledPolicy:
    """A compiled policy from an inline YAML string (dedented)."""
    return compile_policy(parse_policy(textwrap.dedent(text), "<test>"), "<test>")


BASE_POLICY = """
name: test
identity:
  account:
    - header: x-account-id
    - api_key: true
    - client_ip: true
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
  - path: /v1/messages
    dialect: anthropic-messages
  - path: /v1/embeddings
    dialect: generic
tiers:
  default:
    requests: "{requests}"
    tokens: "{tokens}"
    concurrency: {concurrency}
    max_output_tokens: 100
storage:
  timeout: 5
"""


def base_policy(
    requests: str = "1000/minute",
    tokens: str = "1000000/minute",
    concurrency: int = 100,
    **extra: str,
) -> str:
    text = BASE_POLICY.format(requests=requests, tokens=tokens, concurrency=concurrency)
    return text + "".join(f"{key}: {value}\n" for key, value in extra.items())


class Clock:
    """A clock the test moves by hand: window arithmetic never depends on the wall time."""

    def __init__(self, now: float = 1_800_000_005.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Guarded:
    """A HydraGuard under test plus what the tests inspect afterwards."""

    guard: HydraGuard
    registry: CollectorRegistry
    client: httpx.AsyncClient

    async def usage(self, account: str, tier: str = "default") -> dict[str, float]:
        """Current usage of every limit of ``account`` (and global), by rule name."""
        await self.guard.drain()
        plan = self.guard.guard.gate.planner.plan(account, tier, 0)
        values = await self.guard.storage.primary.usage(plan.checks, self.guard.clock())
        return {limit.rule: value for limit, value in zip(plan.limits, values, strict=True)}


@pytest.fixture
async def guarded(
    storage_uri: str,
) -> AsyncIterator[Callable[..., Awaitable[Guarded]]]:
    """``await guarded(app, policy_yaml, client=(host, port))`` -> Guarded, on each storage."""
    opened: list[Guarded] = []

    async def build(
        app: ASGIApp,
        policy: str | None = None,
        *,
        client: tuple[str, int] = ("127.0.0.1", 40000),
        clock: Callable[[], float] | None = None,
    ) -> Guarded:
        registry = CollectorRegistry()
        text = textwrap.dedent(policy or base_policy())
        if "\nstorage:" not in "\n" + text:
            # A loaded CI machine can take longer than the default 50 ms storage timeout;
            # behaviour tests must not fall back to on_error: open by accident.
            text += "\nstorage:\n  timeout: 5\n"
        guard = HydraGuard(
            app,
            policy=compile_yaml(text),
            storage=storage_uri,
            registry=registry,
            clock=clock or Clock(),
        )
        transport = httpx.ASGITransport(app=guard, client=client)
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        made = Guarded(guard, registry, http)
        opened.append(made)
        return made

    yield build
    for made in opened:
        await made.client.aclose()
        await made.guard.aclose()


# --- fake upstreams -------------------------------------------------------------------


@dataclass
class Upstream:
    """What the fake upstream saw; tests read it after the request."""

    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    scopes: list[dict[str, Any]] = field(default_factory=list)


def openai_reply(prompt_tokens: int = 11, completion_tokens: int = 7) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def anthropic_reply(input_tokens: int = 13, output_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def build_upstream(upstream: Upstream) -> Starlette:
    """A tiny model API: echoes what it got and answers with fixed usage."""

    async def chat(request: Request) -> Response:
        body = await request.body()
        upstream.bodies.append(body)
        upstream.headers.append(dict(request.headers))
        upstream.scopes.append(dict(request.scope))
        return JSONResponse(openai_reply())

    async def messages(request: Request) -> Response:
        upstream.bodies.append(await request.body())
        upstream.headers.append(dict(request.headers))
        return JSONResponse(anthropic_reply())

    async def other(request: Request) -> Response:
        upstream.bodies.append(await request.body())
        upstream.scopes.append(dict(request.scope))
        return JSONResponse({"ok": True})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/embeddings", other, methods=["POST", "GET"]),
            Route("/health", other, methods=["GET", "POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def upstream_app(upstream: Upstream) -> Starlette:
    return build_upstream(upstream)


def sse_app(
    chunks: list[bytes], *, hold: asyncio.Event | None = None, sent: asyncio.Event | None = None
) -> ASGIApp:
    """An upstream that streams ``chunks`` as SSE, one ASGI message each; with ``hold``,
    it stops after the first chunk until the event is set (to cancel mid-stream)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if index == 0:
                if sent is not None:
                    sent.set()
                if hold is not None:
                    await hold.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def streaming_json_app(payload: Any) -> Starlette:
    async def endpoint(request: Request) -> Response:
        await request.body()

        async def parts() -> AsyncIterator[bytes]:
            text = json.dumps(payload).encode()
            for start in range(0, len(text), 7):
                yield text[start : start + 7]

        return StreamingResponse(parts(), media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])


# --- raw ASGI calls -------------------------------------------------------------------


def http_scope(
    path: str,
    *,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": client,
        "server": ("testserver", 80),
        "state": {},
    }


async def call_asgi(
    app: ASGIApp,
    scope: dict[str, Any],
    body: bytes | list[bytes] = b"",
    sent: list[Message] | None = None,
) -> list[Message]:
    """Run one request through ``app``; returns every message it sent, as sent."""
    parts = [body] if isinstance(body, bytes) else list(body)
    out: list[Message] = [] if sent is None else sent
    disconnected = asyncio.Event()

    async def receive() -> Message:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        out.append(message)

    await app(scope, receive, send)
    return out


def response_headers(messages: list[Message]) -> dict[str, str]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}


def body_chunks(messages: list[Message]) -> list[bytes]:
    return [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]


# --- a real socket --------------------------------------------------------------------


@asynccontextmanager
async def running_server(app: ASGIApp) -> AsyncIterator[str]:
    """uvicorn on a free loopback port inside this event loop; shut down cleanly."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above for test modules: importing ``conftest`` by name is ambiguous
    when several test folders have one (they have no ``__init__.py``)."""
    return SimpleNamespace(
        compile_yaml=compile_yaml,
        base_policy=base_policy,
        openai_reply=openai_reply,
        anthropic_reply=anthropic_reply,
        build_upstream=build_upstream,
        sse_app=sse_app,
        streaming_json_app=streaming_json_app,
        http_scope=http_scope,
        call_asgi=call_asgi,
        response_headers=response_headers,
        body_chunks=body_chunks,
        running_server=running_server,
        Upstream=Upstream,
        Clock=Clock,
    )
