"""The admin API under ``/_hydraguard/``: look at and act on accounts, reload the policy.

Off (404) unless the policy or its environment variable gives a token; every call needs
``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .admit.plan import BLOCK_SUFFIX, account_prefix
from .errors import PolicyError

if TYPE_CHECKING:
    from .middleware import HydraGuard

PREFIX = "/_hydraguard/"
MAX_BLOCK_SECONDS = 365 * 86400


class AdminAPI:
    def __init__(self, guard: HydraGuard) -> None:
        self.guard = guard
        self.router = Router(
            routes=[
                Route("/_hydraguard/policy", self.policy, methods=["GET"]),
                Route("/_hydraguard/reload", self.reload, methods=["POST"]),
                Route("/_hydraguard/accounts/{account}", self.account, methods=["GET"]),
                Route("/_hydraguard/accounts/{account}/reset", self.reset, methods=["POST"]),
                Route("/_hydraguard/accounts/{account}/block", self.block, methods=["POST"]),
                Route("/_hydraguard/accounts/{account}/unblock", self.unblock, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.guard.policy.admin_token
        if not token:
            response: Response = JSONResponse({"error": "not found"}, status_code=404)
        elif not _authorised(scope, token):
            response = JSONResponse(
                {"error": "admin token required"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="hydraguard"'},
            )
        else:
            await self.router(scope, receive, send)
            return
        await response(scope, receive, send)

    async def policy(self, request: Request) -> Response:
        policy = self.guard.policy
        return JSONResponse(
            {
                "name": policy.name,
                "source": policy.source,
                "mode": "shadow" if policy.shadow else "enforce",
                "tiers": sorted(policy.tiers),
                "rules": list(policy.rules),
            }
        )

    async def reload(self, request: Request) -> Response:
        try:
            self.guard.reload()
        except PolicyError as exc:
            return JSONResponse({"result": "error", "errors": exc.problems}, status_code=400)
        return JSONResponse({"result": "ok", "policy": self.guard.policy.name})

    async def account(self, request: Request) -> Response:
        account = request.path_params["account"]
        policy = self.guard.policy
        tier = request.query_params.get("tier", policy.default_tier)
        if tier not in policy.tiers:
            return JSONResponse({"error": f"unknown tier {tier!r}"}, status_code=400)
        storage = self.guard.storage.primary
        now = time.time()
        plan = self.guard.guard.gate.planner.plan(account, tier, 0)
        usage = await storage.usage(plan.checks, now)
        limits: list[dict[str, Any]] = []
        for limit, check, used in zip(plan.limits, plan.checks, usage, strict=True):
            if check.window < 0:
                continue
            limits.append(
                {
                    "rule": limit.rule,
                    "limit": check.limit,
                    "window_seconds": check.window or None,
                    "usage": round(used, 3),
                    "remaining": max(0, int(check.limit - used)),
                    "mode": "shadow" if check.shadow else "enforce",
                }
            )
        blocked = await storage.flag_ttl(account_prefix(account) + BLOCK_SUFFIX, now)
        return JSONResponse(
            {"account": account, "tier": tier, "blocked_seconds": blocked, "limits": limits}
        )

    async def reset(self, request: Request) -> Response:
        removed = await self.guard.storage.primary.clear(account_prefix(request.path_params["account"]))
        return JSONResponse({"account": request.path_params["account"], "removed_keys": removed})

    async def block(self, request: Request) -> Response:
        try:
            body = await request.json()
            seconds = float(body.get("seconds", 3600)) if isinstance(body, dict) else None
        except ValueError:
            seconds = None
        if seconds is None or not 0 < seconds <= MAX_BLOCK_SECONDS:
            return JSONResponse(
                {"error": f'send {{"seconds": N}} with 0 < N <= {MAX_BLOCK_SECONDS}'}, status_code=400
            )
        account = request.path_params["account"]
        await self.guard.storage.primary.set_flag(account_prefix(account) + BLOCK_SUFFIX, seconds, time.time())
        return JSONResponse({"account": account, "blocked_seconds": seconds})

    async def unblock(self, request: Request) -> Response:
        account = request.path_params["account"]
        was = await self.guard.storage.primary.clear_flag(account_prefix(account) + BLOCK_SUFFIX)
        return JSONResponse({"account": account, "was_blocked": was})


def _authorised(scope: Scope, token: str) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            given = value.decode("latin-1")
            if given[:7].lower() != "bearer ":
                return False
            return hmac.compare_digest(given[7:].strip().encode(), token.encode())
    return False
