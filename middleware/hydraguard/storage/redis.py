"""Redis storage: one server-side script per decision, so one round trip on a single node.

``limits`` parses the URL forms (redis://, rediss://, redis+unix://, redis+sentinel://,
redis+cluster://) and builds the redis-py client; hydraguard adds its own scripts on
that client because ``limits`` checks one limit per call and a decision needs them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from limits.storage import storage_from_string

from ..background import Background
from ..errors import StorageError
from .base import Charge, Check, Lease, Storage, Verdict, window_usage
from .redis_packing import fast_connection_class

log = logging.getLogger("hydraguard.storage")


def _script(name: str) -> str:
    return (resources.files("hydraguard.storage") / "lua" / name).read_text(encoding="utf-8")


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the text inside the first {...}."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


def split_key(key: str) -> tuple[str, str]:
    """(hash, field prefix) of a check key: everything of one subject (the keys sharing a
    hash tag, e.g. ``hg:{a:acct-1}:r60``, ``hg:{a:acct-1}:c``, ``hg:{a:acct-1}:b``) lives
    in one hash named up to the tag (``hg:{a:acct-1}``), so a decision reads and writes a
    subject with one call each (see acquire.lua). A key without a tag is its own hash."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start >= 0 and end > start + 1:
        return key[: end + 1], key[end + 1 :]
    return key, ""


def _window_counts(fields: Sequence[Any], window_id: int) -> tuple[float, float]:
    """(current, previous) counts at ``window_id`` from a limit's (id, current, previous)."""
    stored, current, previous = (float(v) if v is not None else 0.0 for v in fields)
    if stored == window_id:
        return current, previous
    if stored == window_id - 1:
        return 0.0, current
    return 0.0, 0.0


def _live_leases(text: Any, now: float) -> int:
    return sum(1 for expiry in orjson.loads(text).values() if expiry > now) if text else 0


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


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
                    connection_class=fast_connection_class(
                        pool.connection_class, pool.connection_kwargs.get("encoding", "utf-8")
                    ),
                    **pool.connection_kwargs,
                )
            )
        # register_script keeps the SHA and reloads the source on NOSCRIPT (e.g. after a restart).
        self._acquire = self.client.register_script(_script("acquire.lua"))
        self._settle = self.client.register_script(_script("settle.lua"))
        self._pending = Background()

    async def acquire(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        if not self.cluster:
            return await self._acquire_group(checks, now, lease_id, lease_ttl)
        return await self._acquire_by_slot(checks, now, lease_id, lease_ttl)

    async def _acquire_group(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # Every hash once and everything else in one JSON argument (see acquire.lua): the
        # client-side packing and parsing of a script call cost as much as the script.
        keys: list[str] = []
        index: dict[str, int] = {}
        spec: list[Any] = [now, lease_id, lease_ttl, self.sliding]
        windows: list[int] = []
        for check in checks:
            # split_key inlined: this loop runs for every check of every request.
            key = check.key
            start = key.find("{")
            end = key.find("}", start + 1)
            if start >= 0 and end > start + 1:
                key, field = key[: end + 1], key[end + 1 :]
            else:
                field = ""
            k = index.get(key)
            if k is None:
                k = index[key] = len(keys) + 1
                keys.append(key)
            spec += (check.window, check.limit, check.cost, check.shadow, k, field)
            windows.append(check.window)
        reply = await self._acquire(keys=keys, args=[orjson.dumps(spec)])
        n = len(checks)
        admitted = reply[0] == 1
        # Window ids and resets follow from `now` alone, as in the script.
        window_ids = [int(now // w) if w > 0 else 0 for w in windows]
        resets = [w - now % w if w > 0 else 0.0 for w in windows]
        return Verdict(
            admitted,
            admitted,
            list(map(float, reply[1 : n + 1])),
            list(map(float, reply[n + 1 :])),
            resets,
            window_ids,
        )

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
            for indexes, part in taken:
                charges = [
                    Charge(checks[i].key, checks[i].window, merged.window_ids[i], -checks[i].cost)
                    for j, i in enumerate(indexes)
                    # A shadow check that did not fit was not charged.
                    if checks[i].window > 0 and not (checks[i].shadow and part.retry_after[j] > 0)
                ]
                leases = [
                    Lease(checks[i].key, lease_id)
                    for j, i in enumerate(indexes)
                    if checks[i].window == 0 and not (checks[i].shadow and part.retry_after[j] > 0)
                ]
                await self._settle_now(charges, leases, now)
        return merged

    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        if not charges and not leases:
            return
        self._pending.spawn(self._settle_safely(charges, leases, now))

    async def _settle_safely(
        self, charges: Sequence[Charge], leases: Sequence[Lease], now: float
    ) -> None:
        try:
            await self._settle_now(charges, leases, now)
        except Exception as exc:
            # Leases then expire on their own (lease TTL); the token correction is lost and logged.
            log.warning("hydraguard: settlement failed, leases will expire by TTL: %s", exc)

    async def _settle_now(
        self, charges: Sequence[Charge], leases: Sequence[Lease], now: float
    ) -> None:
        changes: list[tuple[int, str, int, Any, float]] = [
            (0, c.key, c.window, c.window_id, c.delta) for c in charges
        ]
        changes += [(2, lease.key, 0, lease.lease_id, 0) for lease in leases]
        await self._change(changes, now)

    async def _change(
        self, changes: Sequence[tuple[int, str, int, Any, float]], now: float
    ) -> None:
        """Run settle.lua over (mode, key, window, window id or lease id, amount) changes:
        one call on a single node, one per hash tag on a Cluster."""
        groups: dict[str, list[tuple[int, str, int, Any, float]]] = {}
        for change in changes:
            groups.setdefault(hash_tag(change[1]) if self.cluster else "", []).append(change)
        for group in groups.values():
            keys: list[str] = []
            index: dict[str, int] = {}
            spec: list[Any] = [now]
            for mode, key, window, window_id, amount in group:
                hash_key, field = split_key(key)
                k = index.get(hash_key)
                if k is None:
                    k = index[hash_key] = len(keys) + 1
                    keys.append(hash_key)
                spec += (mode, k, field, window, window_id, amount)
            await self._settle(keys=keys, args=[orjson.dumps(spec)])

    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        async with self.client.pipeline(transaction=False) as pipe:
            for check in checks:
                hash_key, field = split_key(check.key)
                if check.window > 0:
                    pipe.hmget(hash_key, [field + ".i", field + ".c", field + ".p"])
                elif check.window == 0:
                    pipe.hget(hash_key, field + ".l")
            replies = iter(await pipe.execute())
        out: list[float] = []
        for check in checks:
            if check.window == -1:
                out.append(0.0)
            elif check.window == 0:
                out.append(float(_live_leases(next(replies), now)))
            else:
                window_id = int(now // check.window)
                current, previous = _window_counts(next(replies), window_id)
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
                hash_key, field = split_key(key)
                pipe.hmget(hash_key, [field + ".i", field + ".c", field + ".p"])
            counts = [_window_counts(reply, window_id) for reply in await pipe.execute()]
        current = sum(c for c, _ in counts)
        previous = sum(p for _, p in counts)
        await self._add(
            [(target, window, window_id, current), (target, window, window_id - 1, previous)], now
        )

    async def add_usage(self, entries: Sequence[tuple[str, int, int, float]]) -> None:
        await self._add(entries, time.time())

    async def _add(self, entries: Sequence[tuple[str, int, int, float]], now: float) -> None:
        changes: list[tuple[int, str, int, Any, float]] = [
            (1, key, window, window_id, round(amount))
            for key, window, window_id, amount in entries
            if round(amount)
        ]
        if changes:
            await self._change(changes, now)

    async def set_flag(self, key: str, seconds: float, now: float) -> None:
        await self._change([(3, key, 0, 0, seconds)], now)

    async def clear_flag(self, key: str) -> bool:
        hash_key, field = split_key(key)
        return bool(await self.client.hdel(hash_key, field + ".f"))

    async def flag_ttl(self, key: str, now: float) -> float | None:
        hash_key, field = split_key(key)
        expiry = await self.client.hget(hash_key, field + ".f")
        left = float(expiry) - now if expiry is not None else 0.0
        return left if left > 0 else None

    async def put_values(self, entries: Sequence[tuple[str, bytes, float]]) -> None:
        # One pipeline (not a transaction: on Redis Cluster the keys span slots).
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value, seconds in entries:
                pipe.set(key, value, px=max(1, int(seconds * 1000)))
            await pipe.execute()

    async def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self.cluster:
            values = await self.client.mget_nonatomic(list(keys))
        else:
            values = await self.client.mget(list(keys))
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def clear(self, prefix: str) -> int:
        removed = 0
        async for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
            removed += await self.client.delete(key)
        hash_key, field_prefix = split_key(prefix)
        if field_prefix:
            # The prefix reaches into a subject's hash (e.g. one limit of an account).
            fields = [
                name
                for name in await self.client.hkeys(hash_key)
                if (name.decode() if isinstance(name, bytes) else name).startswith(field_prefix)
            ]
            if fields:
                await self.client.hdel(hash_key, *fields)
                removed += len(fields)
        return removed

    async def reset_connections(self) -> None:
        """Drop pooled connections (after an outage they may point at a dead server process)."""
        await self.client.connection_pool.disconnect()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def drain(self) -> None:
        await self._pending.drain()

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()
