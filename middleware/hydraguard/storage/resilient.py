"""What a decision does when shared storage fails: the policy's ``storage.on_error``.

- ``open``: admit, reserve nothing, count the failure.
- ``closed``: refuse (503 in the route's dialect) with the reason.
- ``local``: decide on per-process memory counters, each limit divided by the
  configured replica count, so N replicas together stay near the shared limit.

Every call is bounded by ``storage.timeout``; after ``breaker_failures`` failures in
a row the breaker opens and decisions stop waiting on the dead server, and once
``breaker_reset`` seconds have passed one decision probes it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ..background import Background
from ..errors import StorageError
from ..metrics import Metrics
from ..policy.schema import Storage as StorageSettings
from .base import Charge, Check, KeyLayout, Lease, Storage, Verdict
from .memory import MemoryStorage

log = logging.getLogger("hydraguard.storage")


@dataclass(slots=True)
class Outcome:
    verdict: Verdict
    store: Storage | None  # where the reservation lives (None: nothing was reserved)
    degraded: str | None  # None, "storage_open", "storage_local", "storage_closed"


class Breaker:
    def __init__(self, failures: int, reset_after: float) -> None:
        self.threshold = failures
        self.reset_after = reset_after
        self.failures = 0
        self.opened_at: float | None = None

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at >= self.reset_after:
            self.opened_at = now  # one probe per reset period
            return True
        return False

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker (recovery)."""
        recovered = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        return recovered

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold and self.opened_at is None:
            self.opened_at = now


class ResilientStorage:
    """Wraps a shared storage with timeouts, a circuit breaker and the policy's fallback."""

    def __init__(self, primary: Storage, settings: StorageSettings, metrics: Metrics) -> None:
        self.primary = primary
        self.settings = settings
        self.metrics = metrics
        primary.on_settle_error = metrics.storage_errors.labels("settle").inc
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_reset)
        self.local = MemoryStorage("memory://local", sliding=primary.sliding)
        self.direct = not primary.shared  # memory storage cannot fail: no timeout or breaker
        # Usage admitted on local counters during an outage, pushed to shared storage on
        # recovery so the shared windows still see it: (key, window, window id) -> amount.
        self.owed: dict[tuple[str, int, int], float] = {}
        self._tasks = Background()

    def reconfigure(self, settings: StorageSettings, sliding: bool) -> None:
        """A reloaded policy's ``storage`` section and window strategy, in force from the next
        call: failure mode, timeout, breaker thresholds (its state kept), replica count. The
        connection stays as opened: a changed ``storage.timeout`` still bounds every decision,
        but the socket timeouts of background work keep their first value until a restart."""
        self.settings = settings
        self.breaker.threshold = settings.breaker_failures
        self.breaker.reset_after = settings.breaker_reset
        self.primary.sliding = self.local.sliding = sliding

    def available(self) -> bool:
        """Shared storage is worth calling: its breaker is closed (background work checks)."""
        return self.breaker.opened_at is None

    @property
    def timeout(self) -> float | None:
        """How long any storage call on a request's path may wait (None: memory never does)."""
        return None if self.direct else self.settings.timeout

    async def acquire(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
    ) -> Outcome:
        if self.direct:
            return Outcome(
                await self.primary.acquire(checks, now, lease_id, lease_ttl, layout),
                self.primary,
                None,
            )
        if self.breaker.allows(time.monotonic()):
            try:
                async with asyncio.timeout(self.settings.timeout):
                    verdict = await self.primary.acquire(checks, now, lease_id, lease_ttl, layout)
            except asyncio.CancelledError:  # the request was cancelled (its client left)
                self._return_leases(checks, lease_id, now)
                raise
            except (Exception, TimeoutError) as exc:  # redis errors, timeouts, script errors
                self._failed("acquire", exc)
                if isinstance(exc, TimeoutError):
                    self._return_leases(checks, lease_id, now)
            else:
                self._succeeded(now)
                return Outcome(verdict, self.primary, None)
        return self._fallback(checks, now, lease_id, lease_ttl)

    def _return_leases(self, checks: Sequence[Check], lease_id: str, now: float) -> None:
        """An acquire whose answer never came (timed out, or the request was cancelled): the
        script may have run all the same, so any concurrency lease it took is returned
        (idempotent); no request would ever release it. Window charges it may have made
        stay, which errs on the side of counting."""
        leases = [Lease(c.key, lease_id) for c in checks if c.window == 0]
        if leases:
            self.primary.settle([], leases, now)

    async def probe(self, wait: float, now: float) -> bool:
        """Ping shared storage; True when it answers within ``wait`` seconds.

        An answer closes an open breaker, as a decision's probe would: a gateway that a
        load balancer took out of rotation (``/healthz``) gets no decisions to probe with.
        A failed ping does not count towards the breaker: only decisions open it.
        """
        if self.direct:
            return True
        try:
            async with asyncio.timeout(wait):
                alive = await self.primary.ping()
        except (Exception, TimeoutError):  # refused, reset, timed out: all mean unreachable
            return False
        if alive and not self.available():
            self._succeeded(now)
        return alive

    def _succeeded(self, now: float) -> None:
        if self.breaker.success():
            log.warning("hydraguard: storage %s is back", self.primary.uri)
            self.metrics.breaker_open.set(0)
            if self.owed:
                self._background(self._flush_owed(now))

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.storage_errors.labels(operation).inc()
        was_open = self.breaker.opened_at is not None
        self.breaker.failure(time.monotonic())
        if self.breaker.opened_at is not None and not was_open:
            self.metrics.breaker_open.set(1)
            log.error("hydraguard: storage %s is failing, breaker open: %r", self.primary.uri, exc)
            # Pooled connections to a dead server would fail again after it is back.
            self._background(self.primary.reset_connections())

    def _fallback(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Outcome:
        mode = self.settings.on_error
        n = len(checks)
        if mode == "open":
            verdict = Verdict(True, False, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n)
            return Outcome(verdict, None, "storage_open")
        if mode == "closed":
            verdict = Verdict(False, False, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n)
            return Outcome(verdict, None, "storage_closed")
        replicas = self.settings.replicas
        scaled = [
            Check(c.key, max(1, c.limit // replicas), c.window, c.cost, c.shadow) for c in checks
        ]
        verdict = self.local.acquire_now(scaled, now, lease_id, lease_ttl)
        if verdict.charged:
            for i, check in enumerate(checks):
                if check.window > 0 and not (check.shadow and verdict.retry_after[i] > 0):
                    slot = (check.key, check.window, verdict.window_ids[i])
                    self.owed[slot] = self.owed.get(slot, 0.0) + check.cost
        return Outcome(verdict, self.local, "storage_local")

    def settle(
        self, store: Storage | None, charges: Sequence[Charge], leases: Sequence[Lease], now: float
    ) -> None:
        if store is None:
            return
        store.settle(charges, leases, now)
        if store is self.local:
            for charge in charges:
                slot = (charge.key, charge.window, charge.window_id)
                if slot in self.owed:
                    self.owed[slot] = max(0.0, self.owed[slot] + charge.delta)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # best effort: the breaker handles the outage itself
                log.debug("hydraguard: storage maintenance failed: %r", exc)

        self._tasks.spawn(run())

    async def _flush_owed(self, now: float) -> None:
        owed, self.owed = self.owed, {}
        # Windows that ended more than one window ago weigh nothing any more.
        live = [(k, w, i, a) for (k, w, i), a in owed.items() if a and i >= int(now // w) - 1]
        try:
            async with asyncio.timeout(max(self.settings.timeout * 20, 1.0)):
                await self.primary.add_usage(live)
        except (Exception, TimeoutError) as exc:
            self.metrics.storage_errors.labels("flush").inc()
            log.warning(
                "hydraguard: could not push %d local counters to %s: %r",
                len(live),
                self.primary.uri,
                exc,
            )
        else:
            log.warning("hydraguard: pushed %d local counters to %s", len(live), self.primary.uri)

    async def aclose(self) -> None:
        await self._tasks.drain()
        try:
            await self.primary.aclose()
        except Exception as exc:
            raise StorageError(f"closing {self.primary.uri}: {exc}") from exc
