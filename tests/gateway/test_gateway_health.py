"""``/healthz`` as a readiness check, against a real redis-server that is stopped and
restarted: 503 while every limited request is refused, 200 "degraded" on a fallback."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from hydraguard.gateway.app import GatewayConfig, create_gateway
from redis_server import RedisServer, running

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHAT = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def policy_file(tmp_path: Path, on_error: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: health-test
            identity:
              account:
                - header: x-account-id
            storage:
              on_error: {on_error}
              timeout: 0.2
              breaker_failures: 1
              breaker_reset: 3600   # only a probe can close the breaker within a test
            """
        )
    )
    return str(path)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    yield from running(RedisServer())


@asynccontextmanager
async def gateway(
    tmp_path: Path, server: RedisServer, on_error: str
) -> AsyncIterator[httpx.AsyncClient]:
    config = GatewayConfig(
        policy=policy_file(tmp_path, on_error), storage=server.url, watch_policy=False
    )
    app = create_gateway(config, CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http
    finally:
        await app.state.guard.aclose()


async def chat(http: httpx.AsyncClient) -> int:
    response = await http.post("/v1/chat/completions", json=CHAT, headers={"x-account-id": "a"})
    return response.status_code


async def test_closed_mode_is_unavailable_while_storage_is_down(
    tmp_path: Path, server: RedisServer
) -> None:
    async with gateway(tmp_path, server, "closed") as http:
        healthy = await http.get("/healthz")
        server.stop()
        down = await http.get("/healthz")
        refused = await chat(http)
        server.start()  # same port
        back = await http.get("/healthz")
        served = await chat(http)
    assert (healthy.status_code, healthy.json()) == (
        200,
        {"status": "ok", "policy": "health-test", "storage": "ok"},
    )
    assert (down.status_code, down.json()) == (
        503,
        {"status": "unavailable", "policy": "health-test", "storage": "down", "fallback": "closed"},
    )
    assert refused == 503  # what the 503 health answer announces
    assert back.status_code == 200 and back.json()["status"] == "ok"
    assert served == 200


@pytest.mark.parametrize("on_error", ["open", "local"])
async def test_fallback_modes_are_degraded_but_ready(
    tmp_path: Path, server: RedisServer, on_error: str
) -> None:
    async with gateway(tmp_path, server, on_error) as http:
        server.stop()
        down = await http.get("/healthz")
        served = await chat(http)
    assert (down.status_code, down.json()) == (
        200,
        {"status": "degraded", "policy": "health-test", "storage": "down", "fallback": on_error},
    )
    assert served == 200


async def test_health_check_closes_the_breaker_of_a_gateway_out_of_rotation(
    tmp_path: Path, server: RedisServer
) -> None:
    # A balancer that took a closed-mode gateway out of rotation sends it no requests: were
    # the breaker only closed by a request's probe (after breaker_reset, an hour here), the
    # gateway would refuse everything long after its storage is back.
    async with gateway(tmp_path, server, "closed") as http:
        server.stop()
        assert await chat(http) == 503  # opens the breaker (breaker_failures: 1)
        server.start()
        assert await chat(http) == 503  # the breaker is still open: no call to storage
        health = await http.get("/healthz")
        after = await chat(http)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert after == 200
