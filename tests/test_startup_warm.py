"""At the lifespan's start-up, HydraGuard connects to shared storage and loads its scripts,
so the first decision does not pay for them inside its 50 ms ``storage.timeout`` (on a
loaded host each worker's first decision fell open: admitted, uncounted)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hydraguard.gateway.app import GatewayConfig, create_gateway
from hydraguard.middleware import WARM_TIMEOUT, HydraGuard
from shared_redis import REDIS_URL

pytestmark = pytest.mark.redis


async def run_lifespan(app: Any) -> list[str]:
    """Start and stop ``app``'s lifespan; the messages its server got back."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    out: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        out.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return out


def inner_app(seen: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    return app


async def loaded_scripts(guard: HydraGuard) -> list[bool]:
    shas = [guard.storage.primary._acquire.sha, guard.storage.primary._settle.sha]  # type: ignore[attr-defined]
    assert guard.guard.linker is not None and guard.guard.linker.shared
    shas.append(guard.guard.linker.index._script.sha)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        return [bool(found) for found in await client.script_exists(*shas)]
    finally:
        await client.aclose()


async def flush_scripts() -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.script_flush()
    finally:
        await client.aclose()


async def test_the_lifespan_start_up_loads_every_script_before_the_app_starts() -> None:
    await flush_scripts()
    seen: list[str] = []
    guard = HydraGuard(inner_app(seen), storage=REDIS_URL, registry=CollectorRegistry())
    assert await loaded_scripts(guard) == [False, False, False]
    assert await run_lifespan(guard) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen == ["lifespan.startup", "lifespan.shutdown"]  # passed on unchanged
    assert await loaded_scripts(guard) == [True, True, True]
    await guard.aclose()


async def test_the_gateway_warms_its_mounted_guard_at_start_up() -> None:
    await flush_scripts()
    app = create_gateway(GatewayConfig(storage=REDIS_URL, watch_policy=False), CollectorRegistry())
    await run_lifespan(app)
    assert await loaded_scripts(app.state.guard) == [True, True, True]


async def test_a_storage_that_is_down_at_start_up_does_not_stop_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    guard = HydraGuard(
        inner_app(seen), storage="redis://127.0.0.1:1/0", registry=CollectorRegistry()
    )
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hydraguard"):
        assert await run_lifespan(guard) == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
    assert time.monotonic() - began < WARM_TIMEOUT + 1.0  # bounded: refused at once here
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert "storage not ready at start-up" in caplog.text and "on_error=open" in caplog.text
    await guard.aclose()
