"""HydraGuard: the pure ASGI middleware."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admin import PREFIX as ADMIN_PREFIX
from .admin import AdminAPI
from .assess.risk import RiskEngine
from .cluster.linker import Linker
from .errors import PolicyError
from .guard import Guard
from .metrics import Metrics, metrics_for
from .policy.compiled import CompiledPolicy
from .policy.loader import load_policy
from .record.audit import AuditLog
from .storage.base import Storage
from .storage.factory import storage_from_uri
from .storage.resilient import ResilientStorage

log = logging.getLogger("hydraguard")
WARM_TIMEOUT = 2.0  # seconds the start-up waits for shared storage at most


def route_path(scope: Scope) -> str:
    """The path relative to where the app is mounted. ASGI puts the mount prefix in both
    ``root_path`` and ``path``; matching the full path would let every request to a
    mounted app bypass the policy's routes. (Same rule as starlette's private get_route_path.)"""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


class HydraGuard:
    """Rate limiting for a model API::

        app = HydraGuard(app, policy="policies/default.yaml", storage="memory://")

    Routes the policy does not name, websockets and lifespan pass straight through (at the
    lifespan's start-up, shared storage is connected first: ``warm``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: str | Path | CompiledPolicy | None = None,
        storage: str | Storage = "memory://",
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.metrics: Metrics = metrics_for(registry)
        self.policy_source = None if isinstance(policy, CompiledPolicy) else policy
        try:
            compiled = policy if isinstance(policy, CompiledPolicy) else load_policy(policy)
        except PolicyError:
            self.metrics.policy_loads.labels("error").inc()
            raise
        self.metrics.policy_loads.labels("ok").inc()
        backend = storage_from_uri(
            storage, sliding=compiled.sliding, timeout=compiled.storage.timeout
        )
        self.storage = ResilientStorage(backend, compiled.storage, self.metrics)
        self.clock = clock
        self.audit: AuditLog | None = None
        self.guard = self._guard_for(compiled, None)
        self.admin = AdminAPI(self)

    @property
    def policy(self) -> CompiledPolicy:
        return self.guard.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path.startswith(ADMIN_PREFIX):
            await self.admin(scope, receive, send)
            return
        guard = self.guard  # one policy for the whole request, even across a reload
        route = guard.policy.routes.match(path)
        if route is None:
            await self.app(scope, receive, send)
            return
        await guard.handle(route, path, scope, receive, send, self.app)

    def reload(self, policy: str | Path | CompiledPolicy | None = None) -> None:
        """Compile a new policy completely, then swap it in; on error keep the old one."""
        source = policy if policy is not None else self.policy_source
        try:
            compiled = source if isinstance(source, CompiledPolicy) else load_policy(source)
        except PolicyError as exc:
            self.metrics.policy_reloads.labels("error").inc()
            log.error("hydraguard: policy reload failed, keeping %s:\n%s", self.policy.source, exc)
            raise
        # Counters in storage are kept; how they are read and what happens when storage
        # fails follow the new policy (they were fixed at start-up: a reload that changed
        # on_error was silently ignored).
        self.storage.reconfigure(compiled.storage, compiled.sliding)
        self.guard = self._guard_for(compiled, self.guard)
        self.metrics.policy_reloads.labels("ok").inc()

    def _guard_for(self, policy: CompiledPolicy, previous: Guard | None) -> Guard:
        """A Guard for ``policy``; linking and risk state carry over when their config is unchanged."""
        linker = risk = None
        if (
            policy.clustering.enabled
            or policy.cluster_limits.windows
            or policy.cluster_limits.concurrency
        ):
            if (
                previous is not None
                and previous.linker is not None
                and previous.policy.clustering == policy.clustering
            ):
                linker = previous.linker
            else:
                linker = Linker(
                    policy.clustering,
                    self.storage.primary,
                    timeout=self.storage.timeout,
                    available=self.storage.available,
                    on_error=self.metrics.storage_errors.labels("link").inc,
                )
        if policy.anomaly.enabled:
            if (
                previous is not None
                and previous.risk is not None
                and previous.policy.anomaly == policy.anomaly
            ):
                risk = previous.risk
            else:
                risk = RiskEngine(policy.anomaly, mode="shadow" if policy.shadow else None)
        if linker is not None:
            self.metrics.cluster_stats = linker.stats
        audit_config = policy.model.audit if policy.model is not None else None
        if (
            previous is None
            or previous.policy.model is None
            or audit_config != previous.policy.model.audit
        ):
            if self.audit is not None:
                self.audit.close()  # writes what is queued, then stops the writer thread
            self.audit = None
            if audit_config is not None and audit_config.enabled:
                self.audit = AuditLog.from_config(
                    audit_config, on_drop=self.metrics.audit_dropped.inc
                )
        return Guard(
            policy,
            self.storage,
            self.metrics,
            self.clock,
            linker=linker,
            risk=risk,
            audit=self.audit,
        )

    async def warm(self) -> None:
        """Connect to shared storage and load its scripts before the first request: done at
        the server's lifespan start-up. The first decision otherwise paid for them inside its
        ``storage.timeout`` and, on a loaded host, fell back (``open``: admitted uncounted).
        Bounded by ``WARM_TIMEOUT``; a storage that does not answer is logged, not fatal:
        the decisions then fall back as the policy says, as they would later."""
        if self.storage.direct:
            return
        try:
            async with asyncio.timeout(WARM_TIMEOUT):
                await self.storage.primary.warm()
                if self.guard.linker is not None:
                    await self.guard.linker.warm()
        except (Exception, TimeoutError) as exc:
            log.warning(
                "hydraguard: storage not ready at start-up (%s); decisions fall back to "
                "storage.on_error=%s until it answers",
                exc or type(exc).__name__,
                self.storage.settings.on_error,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, unchanged, with ``warm`` done before its start-up."""

        async def receive_warmed() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.warm()
            return message

        await self.app(scope, receive_warmed, send)

    async def drain(self) -> None:
        """Wait for background settlements and learning (tests, graceful shutdown)."""
        self.guard.learning.flush()
        if self.guard.linker is not None:
            await self.guard.linker.drain()
        if self.guard.sharing is not None:
            await self.guard.sharing.drain()
        await self.storage.primary.drain()

    async def aclose(self) -> None:
        await self.drain()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
            self.audit = None
        await self.storage.aclose()
