"""``/healthz``: a readiness check a load balancer can act on.

- storage answers: 200 ``{"status": "ok"}``;
- storage unreachable, ``storage.on_error: open`` or ``local``: 200 ``{"status":
  "degraded", "fallback": ...}`` — requests are still served, on the named fallback;
- storage unreachable, ``storage.on_error: closed``: 503 ``{"status": "unavailable",
  "fallback": "closed"}`` — every limited request is being refused, so take the
  gateway out of rotation.

The storage is pinged on every call rather than judged by the breaker alone: a breaker
only closes when a decision probes it, and a gateway out of rotation gets no decisions,
so an answering ping closes it here (``ResilientStorage.probe``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..middleware import HydraGuard

PING_TIMEOUT = 0.5  # seconds: a health check must answer well within the balancer's timeout


def health_endpoint(guard: HydraGuard) -> Callable[[Request], Awaitable[Response]]:
    async def healthz(request: Request) -> Response:
        body: dict[str, str] = {"status": "ok", "policy": guard.policy.name, "storage": "ok"}
        if await guard.storage.probe(PING_TIMEOUT, time.time()):
            return JSONResponse(body)
        fallback = guard.storage.settings.on_error
        body.update(storage="down", fallback=fallback)
        if fallback == "closed":
            return JSONResponse({**body, "status": "unavailable"}, status_code=503)
        return JSONResponse({**body, "status": "degraded"})

    return healthz
