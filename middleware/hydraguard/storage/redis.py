"""Redis storage: one server-side script per decision, so one round trip on a single node.

``limits`` parses the URL forms (redis://, rediss://, redis+unix://, redis+sentinel://,
redis+cluster://) and builds the redis-py client; hydraguard adds its own scripts on
that client because ``limits`` checks one limit per call and a decision needs them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from limits.storage import storage_from_string

from ..errors import StorageError
from .base import Charge, Check, Lease, Storage, Verdict, window_usage

log = logging.getLogger("hydraguard.storage")


def _script(name: str) -> str:
    return (resources.files("hydraguard.storage") / "lua" / name).read_text(encoding="utf-8")


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the text inside the first {...}."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


class RedisStorage(Storage):
    shared = True

    def __init__(self, uri: str, *, sliding: bool = True, timeout: float | None = None) -> None:
        self.uri = uri
        self.sliding = sliding
        options: dict[str, Any] = {}
        if timeout is not None:
            # A decision's wait is bounded by storage.timeout in ResilientStorage; the socket
            # timeout only guards background work (settlements, linking) against a hung
            # server, so it is generous: a busy event loop must not turn into lost settlements.
            options.update(socket_timeout=max(5.0, timeout), socket_connect_timeout=timeout)
        try:
            wrapped = storage_from_string("async+" + uri, implementation="redispy", **options)
        except Exception as exc:  # limits raises ConfigurationError and ValueError for bad URLs
            raise StorageError(f"cannot use storage {uri!r}: {exc}") from exc
        self._limits_storage = wrapped
        self.client: Any = wrapped.bridge.get_connection()  # type: ignore[union-attr]
        self.cluster = type(wrapped).__name__ == "RedisClusterStorage"
        if type(wrapped).__name__ == "RedisStorage":
            # redis-py's default pool raises MaxConnectionsError once 100 connections are in
            # use; a burst of concurrent requests reaches that and the fallback would treat it
            # as an outage (on_error: open admits uncounted). A blocking pool of the same size
            # queues them instead; the decision's storage.timeout still bounds the wait.
            pool = self.client.connection_pool
            self.client = aioredis.Redis.from_pool(
                aioredis.BlockingConnectionPool(
                    max_connections=pool.max_connections,
                    timeout=None,
                    connection_class=pool.connection_class,
                    **pool.connection_kwargs,
                )
            )
        # register_script keeps the SHA and reloads the source on NOSCRIPT (e.g. after a restart).
        self._acquire = self.client.register_script(_script("acquire.lua"))
        self._settle = self.client.register_script(_script("settle.lua"))
        self._pending: set[asyncio.Task[None]] = set()

    async def acquire(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        if not self.cluster:
            return await self._acquire_group(checks, now, lease_id, lease_ttl)
        return await self._acquire_by_slot(checks, now, lease_id, lease_ttl)

    async def _acquire_group(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # One packed spec string rather than five arguments a check: argument packing is
        # most of the client-side cost of a script call.
        spec = ";".join(f"{c.window},{c.limit},{c.cost},{1 if c.shadow else 0}" for c in checks)
        reply = await self._acquire(
            keys=[c.key for c in checks],
            args=[repr(now), lease_id, repr(lease_ttl), "1" if self.sliding else "0", spec],
        )
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        parts = text.split("|")
        admitted = parts[0] == "1"
        n = len(checks)
        usage = [0.0] * n
        waits = [0.0] * n
        resets = [0.0] * n
        for i in range(n):
            used, wait, reset = parts[i + 1].split(",")
            usage[i], waits[i], resets[i] = float(used), float(wait), float(reset)
        window_ids = [int(now // c.window) if c.window > 0 else 0 for c in checks]
        return Verdict(admitted, admitted, usage, waits, resets, window_ids)

    async def _acquire_by_slot(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # Redis Cluster runs a script on one slot: one round trip per hash tag. A later
        # group refusing undoes the earlier groups' reservations, so the result stays
        # all-or-nothing (others may briefly see the undone reservation).
        groups: dict[str, list[int]] = {}
        for i, check in enumerate(checks):
            groups.setdefault(hash_tag(check.key), []).append(i)
        n = len(checks)
        merged = Verdict(True, True, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n)
        taken: list[tuple[list[int], Verdict]] = []
        for indexes in groups.values():
            part = await self._acquire_group([checks[i] for i in indexes], now, lease_id, lease_ttl)
            for j, i in enumerate(indexes):
                merged.usage[i], merged.retry_after[i] = part.usage[j], part.retry_after[j]
                merged.reset[i], merged.window_ids[i] = part.reset[j], part.window_ids[j]
            if not part.admitted:
                merged.admitted = merged.charged = False
                break
            taken.append((indexes, part))
        if not merged.admitted:
            for indexes, _part in taken:
                charges = [
                    Charge(checks[i].key, checks[i].window, merged.window_ids[i], -checks[i].cost)
                    for i in indexes
                    if checks[i].window > 0
                ]
                leases = [Lease(checks[i].key, lease_id) for i in indexes if checks[i].window == 0]
                await self._settle_now(charges, leases)
        return merged

    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        if not charges and not leases:
            return
        task = asyncio.get_running_loop().create_task(self._settle_safely(charges, leases))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_safely(self, charges: Sequence[Charge], leases: Sequence[Lease]) -> None:
        try:
            await self._settle_now(charges, leases)
        except Exception as exc:
            # Leases then expire on their own (lease TTL); the token correction is lost and logged.
            log.warning("hydraguard: settlement failed, leases will expire by TTL: %s", exc)

    async def _settle_now(self, charges: Sequence[Charge], leases: Sequence[Lease]) -> None:
        if self.cluster:
            for charge in charges:
                await self._settle(
                    keys=[f"{charge.key}:{charge.window_id}"], args=[1, charge.delta, ""]
                )
            for lease in leases:
                await self._settle(keys=[lease.key], args=[0, lease.lease_id])
            return
        keys = [f"{c.key}:{c.window_id}" for c in charges] + [lease.key for lease in leases]
        lease_id = leases[0].lease_id if leases else ""
        await self._settle(keys=keys, args=[len(charges), *(c.delta for c in charges), lease_id])

    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        out: list[float] = []
        for check in checks:
            if check.window == -1:
                out.append(0.0)
                continue
            if check.window == 0:
                await self.client.zremrangebyscore(check.key, "-inf", now)
                out.append(float(await self.client.zcard(check.key)))
                continue
            window_id = int(now // check.window)
            current = float(await self.client.get(f"{check.key}:{window_id}") or 0)
            previous = float(await self.client.get(f"{check.key}:{window_id - 1}") or 0)
            elapsed = now - window_id * check.window
            out.append(window_usage(previous, current, elapsed, check.window, self.sliding))
        return out

    async def merge_windows(
        self, sources: Sequence[str], target: str, window: int, now: float
    ) -> None:
        window_id = int(now // window)
        sources = [key for key in sources if key != target]
        if not sources:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in sources:
                pipe.get(f"{key}:{window_id}")
                pipe.get(f"{key}:{window_id - 1}")
            counts = await pipe.execute()
        current = sum(int(v or 0) for v in counts[0::2])
        previous = sum(int(v or 0) for v in counts[1::2])
        await self.add_usage(
            [(target, window, window_id, current), (target, window, window_id - 1, previous)]
        )

    async def add_usage(self, entries: Sequence[tuple[str, int, int, float]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, window, window_id, amount in entries:
                window_key = f"{key}:{window_id}"
                pipe.incrby(window_key, round(amount))
                pipe.expire(window_key, 2 * window + 1)
            await pipe.execute()

    async def set_flag(self, key: str, seconds: float, now: float) -> None:
        await self.client.set(key, "1", px=max(1, int(seconds * 1000)))

    async def clear_flag(self, key: str) -> bool:
        return bool(await self.client.delete(key))

    async def flag_ttl(self, key: str, now: float) -> float | None:
        ttl = await self.client.pttl(key)
        return ttl / 1000 if ttl > 0 else None

    async def clear(self, prefix: str) -> int:
        removed = 0
        async for key in self.client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=500):
            removed += await self.client.delete(key)
        return removed

    async def reset_connections(self) -> None:
        """Drop pooled connections (after an outage they may point at a dead server process)."""
        await self.client.connection_pool.disconnect()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()
