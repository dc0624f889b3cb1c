"""Fixtures for the gateway tests: the mock through ASGITransport and real loopback servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from hydraguard.gateway.mock import create_mock_app

Serve = Callable[[ASGIApp], Awaitable[str]]


@asynccontextmanager
async def _serve(app: ASGIApp) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        ws="none",
        lifespan="auto",
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
async def serve() -> AsyncIterator[Serve]:
    """Start ASGI apps on free loopback ports; all are shut down, last first, at teardown."""
    async with AsyncExitStack() as stack:

        async def start(app: ASGIApp) -> str:
            return await stack.enter_async_context(_serve(app))

        yield start


@pytest.fixture
async def mock_client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_mock_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        yield client


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) per SSE event; ``[DONE]`` stays a string."""
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        payload = "\n".join(data)
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


@pytest.fixture
def parse_sse() -> Callable[[str], list[tuple[str | None, Any]]]:
    return sse_events
