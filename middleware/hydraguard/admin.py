"""The admin API under ``/_hydraguard/``: look at and act on accounts, reload the policy.

Off (404) unless the policy or its environment variable gives a token; every call needs
``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .admit.plan import BLOCK_SUFFIX, account_prefix
from .errors import PolicyError

if TYPE_CHECKING:
    from .assess.risk import Scope as Subjects
    from .cluster.linker import Linker
    from .guard import Guard
    from .middleware import HydraGuard
    from .policy.compiled import CompiledPolicy

PREFIX = "/_hydraguard/"
MAX_BLOCK_SECONDS = 365 * 86400
_BATCH = 256  # flags cleared concurrently when a cluster is unblocked


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
                Route("/_hydraguard/clusters/{cluster}", self.cluster, methods=["GET"]),
                Route(
                    "/_hydraguard/clusters/{cluster}/unblock",
                    self.unblock_cluster,
                    methods=["POST"],
                ),
                Route("/_hydraguard/links", self.link, methods=["POST"]),
                Route("/_hydraguard/unlink", self.unlink, methods=["POST"]),
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
        now = self.guard.clock()
        guard = self.guard.guard
        cluster, growth = None, 1.0
        if guard.linker is not None:
            # The cluster's rows read the cluster's counters at its grown limits, as a
            # decision does; planned without it they read a cluster of one that no
            # decision charges while clustering is on, and showed 0.
            cluster = await _maybe_await(guard.linker.index.cluster_of(account))
            info = await _maybe_await(guard.linker.index.explain(cluster))
            growth = _growth(guard.policy, info.size if info is not None else 1)
        plan = guard.gate.planner.plan(account, tier, 0, cluster, cluster_factor=growth)
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
        risk = guard.risk.risk("account", account, now) if guard.risk is not None else None
        return JSONResponse(
            {
                "account": account,
                "tier": tier,
                "cluster": cluster,
                "risk": risk,
                "blocked_seconds": blocked,
                "limits": limits,
            }
        )

    async def cluster(self, request: Request) -> Response:
        cluster = request.path_params["cluster"]
        guard = self.guard.guard
        if guard.linker is None:
            return JSONResponse({"error": "clustering is off in this policy"}, status_code=404)
        info = await _maybe_await(guard.linker.index.explain(cluster))
        if info is None:
            return JSONResponse(
                {"error": f"no cluster {cluster!r} of two or more accounts"}, status_code=404
            )
        now = self.guard.clock()
        tier = request.query_params.get("tier", guard.policy.default_tier)
        growth = _growth(guard.policy, info.size)
        plan = guard.gate.planner.plan(info.members[0], tier, 0, cluster, cluster_factor=growth)
        usage = await self.guard.storage.primary.usage(plan.checks, now)
        limits = [
            {
                "rule": limit.rule,
                "limit": check.limit,
                "window_seconds": check.window or None,
                "usage": round(used, 3),
            }
            for limit, check, used in zip(plan.limits, plan.checks, usage, strict=True)
            if limit.rule.startswith("cluster.")
        ]
        return JSONResponse(
            {
                "cluster": info.cluster_id,
                "size": info.size,
                "members": list(info.members),
                "risk": guard.risk.risk("cluster", cluster, now)
                if guard.risk is not None
                else None,
                "links": [
                    {
                        "a": link.a,
                        "b": link.b,
                        "evidence": [
                            {
                                "signal": e.signal,
                                "value": e.value,
                                "weight": e.weight,
                                "first_seen": e.first_seen,
                                "saturated": e.saturated,
                            }
                            for e in link.evidence
                        ],
                    }
                    for link in info.links
                ],
                "limits": limits,
            }
        )

    async def _linker_and_pair(
        self, request: Request
    ) -> tuple[Linker, str, str, str | None] | Response:
        pair = await _pair(request)
        if isinstance(pair, Response):
            return pair
        linker = self.guard.guard.linker
        if linker is None:
            return JSONResponse({"error": "clustering is off in this policy"}, status_code=404)
        return (linker, *pair)

    async def link(self, request: Request) -> Response:
        found = await self._linker_and_pair(request)
        if isinstance(found, Response):
            return found
        linker, a, b, reason = found
        now = self.guard.clock()
        cluster = await _maybe_await(linker.index.link(a, b, reason or "operator", now))
        linker.forget(a, b)
        if linker.merges:
            tier = self.guard.policy.default_tier
            await self.guard.guard._carry_usage(linker.take_merges(), tier, now)
        return JSONResponse({"a": a, "b": b, "cluster": cluster})

    async def unlink(self, request: Request) -> Response:
        found = await self._linker_and_pair(request)
        if isinstance(found, Response):
            return found
        linker, a, b, _ = found
        clusters = await _maybe_await(linker.index.unlink(a, b))
        linker.forget()
        return JSONResponse({"a": a, "b": b, "clusters": list(clusters)})

    async def reset(self, request: Request) -> Response:
        removed = await self.guard.storage.primary.clear(
            account_prefix(request.path_params["account"])
        )
        return JSONResponse({"account": request.path_params["account"], "removed_keys": removed})

    async def block(self, request: Request) -> Response:
        try:
            body = await request.json()
            seconds = float(body.get("seconds", 3600)) if isinstance(body, dict) else None
        except (TypeError, ValueError):  # not JSON; seconds null, a list, a word
            seconds = None
        if seconds is None or not 0 < seconds <= MAX_BLOCK_SECONDS:
            return JSONResponse(
                {"error": f'send {{"seconds": N}} with 0 < N <= {MAX_BLOCK_SECONDS}'},
                status_code=400,
            )
        account = request.path_params["account"]
        key = account_prefix(account) + BLOCK_SUFFIX
        await self.guard.storage.primary.set_flag(key, seconds, self.guard.clock())
        return JSONResponse({"account": account, "blocked_seconds": seconds})

    async def unblock(self, request: Request) -> Response:
        """Lift the account's block flag and pardon its anomaly evidence (risk, rules in
        force, detector windows) here and, on shared storage, on every replica: lifting
        the flag alone let the same risk block it again at its next request. A block that
        comes from its cluster's risk stays (the cluster is not pardoned)."""
        account = request.path_params["account"]
        guard = self.guard.guard
        was = await guard.storage.primary.clear_flag(
            account_prefix(account) + BLOCK_SUFFIX, guard.clock()
        )
        cleared = False
        cluster_blocked = None
        if guard.risk is not None:
            now = guard.clock()
            cleared = await self._pardon(guard, "account", account, now)
            if guard.linker is not None:
                cluster = await _maybe_await(guard.linker.index.cluster_of(account))
                if guard.risk.blocked_until("cluster", cluster, now):
                    cluster_blocked = cluster  # its next request is refused again
        return JSONResponse(
            {
                "account": account,
                "was_blocked": was,
                "risk_cleared": cleared,
                "cluster_blocked": cluster_blocked,
            }
        )

    async def unblock_cluster(self, request: Request) -> Response:
        """Pardon a cluster's anomaly evidence (here and on every replica) and lift the block
        flags its blocks put on its members. A member whose own risk blocks it stays blocked
        (listed in ``still_blocked``); an operator's block of a member is lifted too."""
        guard = self.guard.guard
        if guard.linker is None:
            return JSONResponse({"error": "clustering is off in this policy"}, status_code=404)
        info = await _maybe_await(guard.linker.index.explain(request.path_params["cluster"]))
        if info is None:
            return JSONResponse(
                {"error": f"no cluster {request.path_params['cluster']!r} of two or more accounts"},
                status_code=404,
            )
        now = guard.clock()
        cleared = False
        kept: list[str] = []
        freed: list[str] = []
        if guard.risk is not None:  # without anomaly rules there is no cluster block to lift
            cleared = await self._pardon(guard, "cluster", info.cluster_id, now)
            for member in info.members:
                blocked = guard.risk.blocked_until("account", member, now)
                (kept if blocked else freed).append(member)
        storage = guard.storage.primary
        lifted: list[str] = []
        for start in range(0, len(freed), _BATCH):  # a hydra cluster may have 20,000 members
            batch = freed[start : start + _BATCH]
            was = await asyncio.gather(
                *(storage.clear_flag(account_prefix(m) + BLOCK_SUFFIX, now) for m in batch)
            )
            lifted.extend(m for m, flagged in zip(batch, was, strict=True) if flagged)
        return JSONResponse(
            {
                "cluster": info.cluster_id,
                "risk_cleared": cleared,
                "accounts_unblocked": lifted,
                "still_blocked": kept,
            }
        )

    @staticmethod
    async def _pardon(guard: Guard, scope: Subjects, key: str, now: float) -> bool:
        """Clear a subject's anomaly state here and tell the other replicas."""
        assert guard.risk is not None
        cleared = guard.risk.unblock(scope, key, now)
        if guard.sharing is not None:
            await guard.sharing.pardon(scope, key, now)
        return cleared


def _growth(policy: CompiledPolicy, size: int) -> float:
    """How far a cluster's limits grow with its membership (as ``Guard.decide`` scales them)."""
    per_member, max_factor = policy.cluster_growth.per_member, policy.cluster_growth.max_factor
    return min(max_factor, 1.0 + per_member * (size - 1)) if per_member else 1.0


async def _maybe_await(value: Any) -> Any:
    """The memory index answers at once, the Redis index with a coroutine."""
    if hasattr(value, "__await__"):
        return await value
    return value


async def _pair(request: Request) -> tuple[str, str, str | None] | Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not (
        isinstance(body, dict) and isinstance(body.get("a"), str) and isinstance(body.get("b"), str)
    ):
        return JSONResponse(
            {"error": 'send {"a": account, "b": account, "reason": text}'}, status_code=400
        )
    reason = body.get("reason")
    return body["a"], body["b"], reason if isinstance(reason, str) else None


def _authorised(scope: Scope, token: str) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            given = value.decode("latin-1")
            if given[:7].lower() != "bearer ":
                return False
            return hmac.compare_digest(given[7:].strip().encode(), token.encode())
    return False
