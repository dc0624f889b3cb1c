"""Mounting HydraGuard: Starlette ``add_middleware`` / ``Middleware``, FastAPI, a Mount
under a prefix, and a real uvicorn socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route

from hydraguard.middleware import HydraGuard

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def statuses(app: Any, path: str, count: int, **kwargs: Any) -> list[int]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        return [(await client.post(path, json=BODY, **kwargs)).status_code for _ in range(count)]


async def test_starlette_add_middleware(kit: SimpleNamespace) -> None:
    app = kit.build_upstream(kit.Upstream())
    policy = kit.compile_yaml(kit.base_policy(requests="2/minute"))
    app.add_middleware(HydraGuard, policy=policy, storage="memory://", registry=CollectorRegistry())
    assert await statuses(app, CHAT, 3, headers={"x-account-id": "s"}) == [200, 200, 429]


async def test_starlette_middleware_list_with_a_policy_file(
    kit: SimpleNamespace, tmp_path: Any
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(kit.base_policy(requests="1/minute"))
    inner = kit.build_upstream(kit.Upstream())
    app = Starlette(
        routes=[Mount("/", app=inner)],
        middleware=[Middleware(HydraGuard, policy=str(path), registry=CollectorRegistry())],
    )
    assert await statuses(app, CHAT, 2, headers={"x-account-id": "f"}) == [200, 429]


async def test_fastapi_add_middleware(kit: SimpleNamespace) -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        return kit.openai_reply(3, 4)

    @app.get("/docs-like")
    async def other() -> dict[str, str]:
        return {"free": "yes"}

    policy = kit.compile_yaml(kit.base_policy(requests="2/minute"))
    app.add_middleware(HydraGuard, policy=policy, storage="memory://", registry=CollectorRegistry())
    assert await statuses(app, CHAT, 3, headers={"x-account-id": "fa"}) == [200, 200, 429]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        for _ in range(3):
            assert (await client.get("/docs-like")).json() == {"free": "yes"}


async def test_mounted_under_a_prefix_still_limits(kit: SimpleNamespace) -> None:
    # Mounted at /api, the app sees path=/api/v1/... and root_path=/api (ASGI spec):
    # the policy's routes are relative to the mount, so the limit must still apply.
    policy = kit.compile_yaml(kit.base_policy(requests="1/minute"))
    guarded = HydraGuard(
        kit.build_upstream(kit.Upstream()), policy=policy, registry=CollectorRegistry()
    )
    app = Starlette(routes=[Mount("/api", app=guarded)])
    assert await statuses(app, "/api" + CHAT, 2, headers={"x-account-id": "m"}) == [200, 429]


async def test_real_uvicorn_socket(guarded: Any, kit: SimpleNamespace) -> None:
    chunks = [
        b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    g = await guarded(kit.sse_app(chunks), kit.base_policy(requests="2/minute"))
    async with kit.running_server(g.guard) as url, httpx.AsyncClient(base_url=url) as client:
        headers = {"x-account-id": "sock"}
        body = {**BODY, "stream": True}
        async with client.stream("POST", CHAT, json=body, headers=headers) as response:
            assert response.status_code == 200
            assert "ratelimit-policy" in response.headers
            received = b"".join([part async for part in response.aiter_raw()])
        assert received == b"".join(chunks)
        assert (await client.post(CHAT, json=body, headers=headers)).status_code == 200
        refused = await client.post(CHAT, json=body, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) > 0
    usage = await g.usage("sock")
    assert usage["tier.default.tokens.1000000/minute"] == 20  # reconciled twice from usage


@pytest.mark.slow
async def test_real_socket_client_disconnect_mid_stream_releases_the_slot(
    guarded: Any, kit: SimpleNamespace
) -> None:
    async def endless_stream(request: Request) -> StreamingResponse:
        await request.body()

        async def events() -> AsyncIterator[bytes]:
            event = json.dumps({"choices": [{"delta": {"content": "abcd"}}]})
            while True:
                yield f"data: {event}\n\n".encode()
                await asyncio.sleep(0.01)

        # StreamingResponse watches for the disconnect and cancels the stream, as real apps do.
        return StreamingResponse(events(), media_type="text/event-stream")

    endless = Starlette(routes=[Route(CHAT, endless_stream, methods=["POST"])])
    g = await guarded(endless, kit.base_policy(concurrency=1))
    async with kit.running_server(g.guard) as url:
        for _ in range(3):
            async with httpx.AsyncClient(base_url=url) as client:
                body = {**BODY, "stream": True}
                async with client.stream(
                    "POST", CHAT, json=body, headers={"x-account-id": "dc"}
                ) as response:
                    assert response.status_code == 200
                    async for _part in response.aiter_raw():
                        break  # hang up after the first chunk
            for _ in range(200):  # the server notices the disconnect on its next send
                if (await g.usage("dc"))["tier.default.concurrency"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert (await g.usage("dc"))["tier.default.concurrency"] == 0
