"""The cluster step of a request: account -> (cluster id, size), and what linking changes.

Memory storage links in-process (no I/O). Redis storage links in a server-side script
shared by every replica; to keep a decision at one round trip, an account seen before
in this process is decided on the mapping as last read from Redis while the new
evidence is linked in the background (so a replica learns a merge its own requests caused
one request late, and one made elsewhere when it re-reads the account, after ``_REFRESH``);
an account new to this process is linked first, so its first request already counts
against its cluster.

With a ``retention``, idle accounts never linked are forgotten: the memory index does it
as it observes, a Redis-backed process asks the script to forget a bounded batch now
and then, in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..background import Background
from ..errors import StorageError
from ..storage.base import Storage
from .config import ClusteringConfig
from .index import ClusterIndex
from .model import ClusterStats, cluster_id
from .signals import SignalExtractor

log = logging.getLogger("hydraguard.cluster")
_CACHE = 200_000  # accounts whose mapping a Redis-backed process remembers
_REFRESH = 10.0  # seconds before an unchanged account is linked again (Redis)
# Retention sweeps of a Redis-backed process: a batch of idle accounts a second, or every
# 0.1 s while batches come back full. A forgotten account costs the script ~50-100 us
# (more with many co-holders of its values), so a batch holds Redis for ~1-2 ms.
_SWEEP_EVERY = 1.0
_SWEEP_CATCH_UP = 0.1
_SWEEP_BATCH = 20


class Linker:
    def __init__(
        self,
        config: ClusteringConfig,
        storage: Storage,
        *,
        timeout: float | None = None,
        available: Callable[[], bool] = lambda: True,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        """``timeout`` bounds the link a new account waits for (the policy's storage.timeout),
        ``available`` says whether shared storage is usable (the breaker is closed), and
        ``on_error`` counts a failed linking call."""
        self.config = config
        self.timeout = timeout
        self._available = available
        self._on_error = on_error
        self.extractor = SignalExtractor(config)
        self.merges: list[tuple[list[str], str]] = []  # (absorbed cluster ids, surviving id)
        self.shared = storage.shared
        self.index: Any
        if self.shared:
            from .redis_index import RedisClusterIndex

            self.index = RedisClusterIndex(storage.client, config, on_merge=self._merged)  # type: ignore[attr-defined]
        else:
            self.index = ClusterIndex(config, on_merge=self._merged)
        self._known: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # account -> (last signals sent to the index, when); Redis also re-links after _REFRESH
        self._last: dict[str, tuple[dict[str, tuple[str, ...]], float]] = {}
        self._learned: dict[
            str, dict[str, tuple[str, ...]]
        ] = {}  # Redis: last template evidence sent
        # Clusters this process saw merged away: a cached mapping to one of them is stale,
        # so that account is decided on a fresh read (else it would spend a dead cluster's quota).
        self._absorbed: set[str] = set()
        self._pending = Background()
        self._stats: ClusterStats | None = None
        self._stale = self._refreshing = False
        self._next_sweep = float("-inf")

    def _merged(self, absorbed: list[str], survivor: str) -> None:
        self.merges.append((list(absorbed), survivor))
        if self.shared:
            if len(self._absorbed) >= _CACHE:
                self._absorbed.clear()
                self._known.clear()
            self._absorbed.update(absorbed)

    def take_merges(self) -> list[tuple[list[str], str]]:
        merges, self.merges = self.merges, []
        return merges

    def signals(
        self,
        headers: dict[str, str],
        state: Mapping[str, Any],
        client_ip: str | None,
        template_bands: Sequence[str] | None = None,
    ) -> dict[str, tuple[str, ...]]:
        return self.extractor.extract(headers, state, client_ip, template_bands)

    async def resolve(
        self, account: str, signals: dict[str, tuple[str, ...]], now: float
    ) -> tuple[str, int]:
        if not self.shared:
            # An account usually sends the same signals every time: nothing new to link.
            seen = self._last.get(account)
            # touch() is False when retention forgot the account: it is observed afresh.
            if seen is not None and seen[0] == signals and self.index.touch(account, now):
                return self.index.cluster_and_size(account)  # type: ignore[no-any-return]
            self._seen(account, signals, now)
            return self.index.observe_sized(account, signals, now)  # type: ignore[no-any-return]
        if self.config.retention and now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            self._pending.spawn(self._sweep(now))
        known = self._known.get(account)
        if known is None or known[0] in self._absorbed:
            if not self._available():  # storage known to be down: do not wait on it at all
                return cluster_id(account), 1
            try:
                # Bounded like the decision itself: a hung Redis must not hold a new
                # account's first request for the socket timeout (seconds).
                async with asyncio.timeout(self.timeout):
                    known = await self.index.observe_sized(account, signals, now)
            except (StorageError, TimeoutError) as exc:
                # The account stands alone for now; admission then follows the storage
                # policy (on_error) as it would without clusters, instead of a 500.
                self._on_error()
                log.warning("hydraguard: linking unavailable, deciding alone: %r", exc)
                return cluster_id(account), 1
            self._remember(account, known)
            return known
        self._known.move_to_end(account)
        # Re-link in the background only when the account shows new signals, or now and then
        # (other accounts' links can change its cluster): not one Redis script per request.
        seen = self._last.get(account)
        if seen is None or seen[0] != signals or now - seen[1] >= _REFRESH:
            self._seen(account, signals, now)
            self._background(account, signals, now)
        return known

    async def _sweep(self, now: float) -> None:
        try:
            gone = await self.index.sweep(now, _SWEEP_BATCH)
        except Exception as exc:  # retention is housekeeping: the next sweep tries again
            self._on_error()
            log.debug("hydraguard: retention sweep failed: %r", exc)
            return
        if gone:
            self.forget(*gone)
            self._changed()
        if len(gone) == _SWEEP_BATCH:  # more may be due
            self._next_sweep = min(self._next_sweep, now + _SWEEP_CATCH_UP)

    def _seen(self, account: str, signals: dict[str, tuple[str, ...]], now: float) -> None:
        if len(self._last) > _CACHE:
            self._last.clear()
        self._last[account] = (signals, now)

    def learn(self, account: str, signals: dict[str, tuple[str, ...]], now: float) -> None:
        """Evidence known only after the response (the prompt's template): off the critical path."""
        if not signals:
            return
        if not self.shared:
            self.index.observe(account, signals, now)
        elif self._learned.get(account) != signals:  # the same template again adds nothing
            self._learned[account] = signals
            if len(self._learned) > _CACHE:
                self._learned.clear()
            self._background(account, signals, now)

    def _background(self, account: str, signals: dict[str, tuple[str, ...]], now: float) -> None:
        async def link() -> None:
            try:
                self._remember(account, await self.index.observe_sized(account, signals, now))
            except Exception as exc:  # linking is best effort; the decision already happened
                self._on_error()
                log.warning("hydraguard: linking %s failed: %s", "an account", exc)

        self._pending.spawn(link())

    def stats(self) -> ClusterStats | None:
        """For the Prometheus collector, which cannot await: the memory index answers at once;
        a Redis index's figures are refreshed in the background after links change."""
        return self.index.stats() if not self.shared else self._stats  # type: ignore[no-any-return]

    def _changed(self) -> None:
        """Linking state changed: refresh the Redis figures, one refresh in flight at a time."""
        if not self.shared:
            return
        self._stale = True
        if self._refreshing:
            return
        self._refreshing = True

        async def refresh() -> None:
            try:
                while self._stale:
                    self._stale = False
                    self._stats = await self.index.stats()
            except Exception as exc:  # figures for metrics only: never fail a request for them
                log.debug("hydraguard: cluster stats refresh failed: %r", exc)
            finally:
                self._refreshing = False

        self._pending.spawn(refresh())

    def _remember(self, account: str, mapping: tuple[str, int]) -> None:
        if self._known.get(account) != mapping:
            self._changed()
        self._known[account] = mapping
        if len(self._known) > _CACHE:
            self._known.popitem(last=False)

    def forget(self, *accounts: str) -> None:
        """Operator links/unlinks change mappings: drop what this process remembers."""
        for account in accounts:
            self._known.pop(account, None)
            self._last.pop(account, None)
            self._learned.pop(account, None)
        if not accounts:
            self._known.clear()
            self._last.clear()
            self._learned.clear()
            self._absorbed.clear()  # a split can bring an absorbed id back

    async def warm(self) -> None:
        """Load a shared index's script (start-up, before the first request)."""
        if self.shared:
            await self.index.warm()

    async def drain(self) -> None:
        await self._pending.drain()
