"""Policy hot reload in the gateway: the file watcher swaps in a changed policy, an invalid
one keeps the old policy running (logged with file:line, counted), and usage survives a
reload. (SIGHUP to a running ``hydraguard serve``: test_gateway_serve.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from hydraguard.gateway import app as gateway_app
from hydraguard.gateway.app import GatewayConfig, create_gateway

Serve = Callable[[ASGIApp], Awaitable[str]]
RELOAD_WAIT = 5.0  # seconds: only bounds a hang when the reload never happens

POLICY = """
name: {name}
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
tiers:
  default:
    requests: "{requests}"
    tokens: "100000/minute"
    concurrency: {concurrency}
    max_output_tokens: 100
storage:
  timeout: 5
"""

CHAT = {
    "model": "hydraguard-mock",
    "max_tokens": 4,
    "messages": [{"role": "user", "content": "hi"}],
}


def policy_text(
    name: str = "reload-test", requests: str = "3/minute", concurrency: int = 10
) -> str:
    return textwrap.dedent(POLICY.format(name=name, requests=requests, concurrency=concurrency))


def rewrite(path: Path, text: str) -> None:
    """Write in place and make sure the mtime moves, even on a coarse-timestamp file system."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


class Running:
    def __init__(self, base: str, registry: CollectorRegistry) -> None:
        self.base = base
        self.registry = registry
        self.last = httpx.Response(0)  # the latest answer statuses() got

    def reloads(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "hydraguard_policy_reloads_total", {"result": result}
        )
        return value or 0.0

    async def wait_for_reload(self, result: str, count: float) -> None:
        async with asyncio.timeout(RELOAD_WAIT):
            while self.reloads(result) < count:  # noqa: ASYNC110 - a metric, no event to await
                await asyncio.sleep(0.02)

    async def statuses(self, http: httpx.AsyncClient, n: int, account: str = "a") -> list[int]:
        out = []
        for _ in range(n):
            response = await http.post(
                f"{self.base}/v1/chat/completions", json=CHAT, headers={"x-account-id": account}
            )
            out.append(response.status_code)
        self.last = response
        return out


@pytest.fixture
async def running(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Awaitable[tuple[Running, Path]]]:
    monkeypatch.setattr(gateway_app, "WATCH_INTERVAL", 0.05)

    async def start(text: str) -> tuple[Running, Path]:
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        registry = CollectorRegistry()
        base = await serve(create_gateway(GatewayConfig(policy=str(path)), registry=registry))
        return Running(base, registry), path

    return start


async def test_changed_limit_applies_and_invalid_policy_keeps_the_old_one(
    running: Callable[[str], Awaitable[tuple[Running, Path]]], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, path = await running(policy_text(requests="3/minute"))
    async with httpx.AsyncClient(timeout=10) as http:
        assert await gateway.statuses(http, 4) == [200, 200, 200, 429]
        assert gateway.reloads("ok") == 0

        rewrite(path, policy_text(requests="6/minute"))
        await gateway.wait_for_reload("ok", 1)
        # Same window, so the 3 already spent still count against the raised limit.
        assert await gateway.statuses(http, 4) == [200, 200, 200, 429]
        assert "tier.default.requests.6/minute" in gateway.last.text

        caplog.set_level(logging.ERROR, logger="hydraguard")
        rewrite(path, policy_text(requests="6/minute") + "tiers_typo: 1\n")
        await gateway.wait_for_reload("error", 1)
        assert gateway.reloads("ok") == 1
        # The old policy (6/minute) still decides; another account gets its full quota.
        assert await gateway.statuses(http, 1) == [429]
        assert "tier.default.requests.6/minute" in gateway.last.text
        assert await gateway.statuses(http, 7, account="b") == [200] * 6 + [429]
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR
    )
    assert re.search(rf"{re.escape(str(path))}:\d+: tiers_typo: unknown key", logged), logged


async def test_usage_survives_a_reload_that_keeps_the_limit(
    running: Callable[[str], Awaitable[tuple[Running, Path]]],
) -> None:
    gateway, path = await running(policy_text(requests="5/minute", concurrency=10))
    async with httpx.AsyncClient(timeout=10) as http:
        assert await gateway.statuses(http, 3) == [200, 200, 200]
        rewrite(path, policy_text(name="renamed", requests="5/minute", concurrency=20))
        await gateway.wait_for_reload("ok", 1)
        assert await gateway.statuses(http, 3) == [200, 200, 429]
        health = await http.get(f"{gateway.base}/healthz")
    assert health.json()["policy"] == "renamed"
