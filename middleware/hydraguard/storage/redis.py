"""Redis storage: one server-side script per decision, so one round trip on a single node.

``limits`` parses the URL forms (redis://, rediss://, redis+unix://, redis+sentinel://,
redis+cluster://) and builds the redis-py client; hydraguard adds its own scripts on
that client because ``limits`` checks one limit per call and a decision needs them all.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import msgpack
import orjson
import redis.asyncio as aioredis
from limits.storage import storage_from_string
from redis.exceptions import NoScriptError

from ..background import Background
from ..errors import StorageError
from ..urls import shown
from .base import (
    Charge,
    Check,
    CheckShape,
    KeyLayout,
    Lease,
    Storage,
    Verdict,
    counter_at,
    merged_entries,
    window_usage,
)
from .redis_cluster_guard import guard_cluster_client
from .redis_connections import DirectConnections
from .redis_packing import fast_connection_class

log = logging.getLogger("hydraguard.storage")

_SETTLE_BATCH = 256  # changes per settle.lua call: bounds how long one call holds Redis
_PACKINGS_KEPT = 256  # check shapes (one per policy tier) whose packed arguments are kept


def _script(name: str) -> str:
    return (resources.files("hydraguard.storage") / "lua" / name).read_text(encoding="utf-8")


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the text inside the first {...}."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


STATE_SUFFIX = ":s"


def _ends_a_tag(head: str) -> bool:
    """Whether ``head``, a key's text before its first "}", ends a hash tag: it holds a
    "{" with something after it. Then the tag is the subject and the rest is the field."""
    return len(head) - 1 > head.find("{") >= 0


def split_key(key: str) -> tuple[str, str]:
    """(state key, field) of a check key: everything of one subject (the keys sharing a
    hash tag, e.g. ``hg:{a:acct-1}:r60``, ``hg:{a:acct-1}:c``, ``hg:{a:acct-1}:b``) lives
    in one MessagePack map under one key (``hg:{a:acct-1}:s``), so a decision reads all
    subjects with one call and writes each with one (see acquire.lua). A key without a
    tag is its own state key, with the field ``""``.

    The ``:s`` keeps this layout's keys apart from the hash-per-subject layout of earlier
    versions (``hg:{a:acct-1}``): during a rolling upgrade old and new replicas each count
    in their own keys instead of failing on each other's (WRONGTYPE)."""
    tag, brace, field = key.partition("}")  # the usual case in one call: hg:{a:acct-1} + :r60
    if brace and _ends_a_tag(tag):
        return tag + "}" + STATE_SUFFIX, field
    start = key.find("{")
    end = key.find("}", start + 1)
    if start >= 0 and end > start + 1:
        return key[: end + 1] + STATE_SUFFIX, key[end + 1 :]
    return key, ""


def _window_counts(entry: Any, now: float, window: int) -> tuple[int, float, float, float]:
    """A limit's [id, current, previous] read at ``now`` (see base.counter_at)."""
    if not isinstance(entry, list):
        return int(now // window), 0.0, 0.0, now - int(now // window) * window
    stored, current, previous = entry
    return counter_at(int(stored), float(current), float(previous), now, window)


@cache
def _doubles(count: int) -> struct.Struct:
    """Little-endian doubles, the acquire script's argument and reply (struct in Redis' Lua)."""
    return struct.Struct("<" + "d" * count)


@cache
def _formats(checks: int) -> tuple[str, str]:
    """acquire.lua's struct formats of its numbers and of its reply for ``checks`` checks."""
    return _doubles(5 * checks + 3).format, _doubles(2 * checks + 1).format


@dataclass(frozen=True, slots=True)
class _Packing:
    """The part of a decision's arguments that every plan of one shape shares: which of
    its subjects hold state (in key order), each check's field and, packed, each check's
    key index, window and shadow flag (acquire.lua's ARGV[2] starts with them)."""

    scopes: tuple[int, ...]  # the subjects' indexes, in the script's key order
    fields: tuple[str, ...]
    windows: tuple[int, ...]
    head: bytes
    formats: tuple[str, str]  # the struct formats of the arguments and of the reply

    @classmethod
    def of(cls, shape: CheckShape) -> _Packing:
        scopes: list[int] = []
        values: list[float] = []
        for scope, window, shadow in zip(shape.scopes, shape.windows, shape.shadows, strict=True):
            if scope not in scopes:
                scopes.append(scope)
            values += (scopes.index(scope) + 1, window, shadow)
        head = _doubles(len(values)).pack(*values)
        return cls(tuple(scopes), shape.names, shape.windows, head, _formats(len(shape.names)))


def _pack_checks(checks: Sequence[Check]) -> tuple[list[str], _Packing]:
    """The state keys and the shared part of the arguments of any checks (see _Packing)."""
    keys: list[str] = []
    index: dict[str, int] = {}
    fields: list[str] = []
    values: list[float] = []
    # A subject's checks come together: a check whose key starts like the previous tagged
    # one's shares its state key, and its field is the rest (split_key's fast path without
    # the call; halved this loop's time).
    subject: str | None = None
    k = 0
    for check in checks:
        head, brace, field = check.key.partition("}")
        if head != subject or not brace:
            key, field = split_key(check.key)
            subject = head if brace and _ends_a_tag(head) else None
            k = index.get(key, 0)
            if not k:
                k = index[key] = len(keys) + 1
                keys.append(key)
        fields.append(field)
        values += (k, check.window, check.shadow)
    packed = _doubles(len(values)).pack(*values)
    windows = tuple(check.window for check in checks)
    return keys, _Packing((), tuple(fields), windows, packed, _formats(len(checks)))


def _settlement_changes(
    charges: Sequence[Charge], leases: Sequence[Lease]
) -> list[tuple[int, str, int, Any, float]]:
    """settle.lua's changes (mode, key, window, window id or lease id, amount) of a settlement."""
    changes: list[tuple[int, str, int, Any, float]] = [
        (0, c.key, c.window, c.window_id, c.delta) for c in charges
    ]
    changes += [(2, lease.key, 0, lease.lease_id, 0) for lease in leases]
    return changes


def _state(blob: bytes | None) -> dict[str, Any]:
    """A subject's state as acquire.lua keeps it (MessagePack); a missing key, or a value
    that is not a MessagePack map, is empty (as the scripts read it)."""
    if not blob:
        return {}
    try:
        found = msgpack.unpackb(blob)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return {}
    return found if isinstance(found, dict) else {}


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


class RedisStorage(Storage):
    shared = True

    def __init__(self, uri: str, *, sliding: bool = True, timeout: float | None = None) -> None:
        self.uri = shown(uri)  # for logs and errors: no password
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
            raise StorageError(f"cannot use storage {self.uri!r}: {exc}") from exc
        self._limits_storage = wrapped
        self.client: Any = wrapped.bridge.get_connection()  # type: ignore[union-attr]
        self.cluster = type(wrapped).__name__ == "RedisClusterStorage"
        if self.cluster:
            self.client = guard_cluster_client(self.client)
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
        # Script calls skip the client's layers (see redis_connections.py); a Cluster client
        # routes by slot itself, so there they go through it.
        self._direct = None if self.cluster else DirectConnections(self.client.connection_pool)
        self._background_timeout = max(5.0, timeout or 0.0)  # the socket timeout, above
        # register_script computes each script's SHA and keeps its source; _run sends the SHA
        # and loads the source when the server answers NOSCRIPT (e.g. after a restart).
        self._acquire = self.client.register_script(_script("states.lua") + _script("acquire.lua"))
        self._settle = self.client.register_script(_script("states.lua") + _script("settle.lua"))
        self._pending = Background()
        self._loading = asyncio.Lock()
        self._loads: dict[str, int] = {}  # script sha -> times this storage loaded it
        self._deciding = 0  # decisions sent and not answered yet
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._settlements: list[tuple[int, str, int, Any, float]] = []
        self._settle_at = 0.0  # the latest `now` among the queued settlements
        self._packings: dict[CheckShape, _Packing] = {}  # one per policy tier

    async def acquire(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
    ) -> Verdict:
        if not self.cluster:
            return await self._acquire_group(checks, now, lease_id, lease_ttl, layout)
        return await self._acquire_by_slot(checks, now, lease_id, lease_ttl)

    async def _acquire_group(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
        dry: bool = False,
    ) -> Verdict:
        """One script call over checks of one slot; ``dry``: what it would answer, reserving
        nothing (a Cluster's groups after a refusing one)."""
        # The numbers travel packed, the fields as arguments of their own and each subject's
        # key once (see acquire.lua): decoding all of it as JSON took a third of the script.
        # A plan's checks (admit/plan.py) come with their key layout, whose shape's part of
        # the arguments is packed once per tier; any other checks are split and packed here.
        if layout is None:
            keys, packing = _pack_checks(checks)
        else:
            known = self._packings.get(layout.shape)
            if known is None:
                if len(self._packings) >= _PACKINGS_KEPT:  # policies reloaded many times
                    self._packings.clear()
                known = self._packings[layout.shape] = _Packing.of(layout.shape)
            packing = known
            subjects = layout.subjects
            keys = [subjects[scope] + STATE_SUFFIX for scope in packing.scopes]
        n = len(checks)
        packed = packing.head + _doubles(3 + 2 * n).pack(
            now,
            lease_ttl,
            self.sliding + 2 * dry,
            *[check.limit for check in checks],
            *[check.cost for check in checks],
        )
        reply = await self._decide(
            (
                "EVALSHA",
                self._acquire.sha,
                len(keys),
                *keys,
                lease_id,
                packed,
                *packing.formats,
                *packing.fields,
            )
        )
        windows = packing.windows
        if len(reply) == 8 * (1 + 2 * n):
            answer = _doubles(1 + 2 * n).unpack(reply)
            # Window ids and resets follow from `now` alone, as in the script.
            resets = [w - now % w if w > 0 else 0.0 for w in windows]
            window_ids = [int(now // w) if w > 0 else 0 for w in windows]
        else:  # a counter's window was ahead of `now`'s: the script says which (acquire.lua)
            answer = _doubles(1 + 3 * n).unpack(reply)
            window_ids = [int(i) for i in answer[2 * n + 1 :]]
            resets = [
                # As memory's: a whole window from the counter's window start, and the way there.
                (float(w) + (i * w - now) if i > now // w else w - now % w) if w > 0 else 0.0
                for w, i in zip(windows, window_ids, strict=True)
            ]
        admitted = answer[0] == 1
        return Verdict(
            admitted,
            admitted,
            list(answer[1 : n + 1]),
            list(answer[n + 1 : 2 * n + 1]),
            resets,
            window_ids,
        )

    async def _decide(self, command: tuple[Any, ...]) -> Any:
        """The acquire script's call. With no decision in flight it goes out at once; while
        some are, the ones that come meanwhile wait for the next event-loop turn and go
        together, one pipeline (one write, one read) instead of a round trip each: under
        32 concurrent decisions this halved the client CPU per decision (benchmarks/README.md).
        Each script still runs atomically on its own. Written here because redis-py has no
        automatic pipelining; a Cluster keeps one call per slot (no pipelines there)."""
        if self._direct is None:
            return await self._run(self._acquire, command, self._send)
        if self._deciding == 0:
            self._deciding += 1
            try:
                return await self._run(self._acquire, command, self._send_direct)
            finally:
                self._deciding -= 1
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, waiter))
        if len(self._waiting) == 1:
            self._pending.spawn(self._decide_together(self._direct))
        return await waiter

    async def _decide_together(self, direct: DirectConnections) -> None:
        batch, self._waiting = self._waiting, []
        self._deciding += len(batch)
        try:
            async with asyncio.timeout(self._background_timeout):
                replies = await direct.send([command for command, _ in batch])
                # A restarted server does not know the script yet: those go one by one (loading it).
                for i, (command, _) in enumerate(batch):
                    if isinstance(replies[i], NoScriptError):
                        try:
                            replies[i] = await self._run(self._acquire, command, self._send_direct)
                        except Exception as exc:
                            replies[i] = exc
        except Exception as exc:  # the connection failed: every decision of the batch did
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        finally:
            self._deciding -= len(batch)
        for (_, waiter), reply in zip(batch, replies, strict=True):
            if waiter.done():  # the caller gave up (storage.timeout)
                continue
            if isinstance(reply, Exception):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    async def _send(self, command: Sequence[Any]) -> Any:
        """Any other script call (settlements, merges, flags): on the decisions' connections
        too, bounded like the client's socket timeout bounds background work."""
        if self._direct is None:
            return await self.client.execute_command(*command)
        async with asyncio.timeout(self._background_timeout):
            return await self._send_direct(command)

    async def _send_direct(self, command: Sequence[Any]) -> Any:
        reply = (await self._direct.send((command,)))[0]  # type: ignore[union-attr]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _run(
        self, script: Any, command: Sequence[Any], send: Callable[[Sequence[Any]], Awaitable[Any]]
    ) -> Any:
        """Send ``command`` (an EVALSHA of ``script``), loading the script when the server
        does not know it (a restart or a SCRIPT FLUSH). Concurrent calls that all meet
        NOSCRIPT load it once: after a restart under load, hundreds of concurrent SCRIPT
        LOADs would be wasted work."""
        loads = self._loads.get(script.sha, 0)
        try:
            return await send(command)
        except NoScriptError:
            async with self._loading:
                # Loaded by another call since this one was sent: nothing to do but retry.
                if self._loads.get(script.sha, 0) == loads:
                    await self.client.script_load(script.script)
                    self._loads[script.sha] = loads + 1
            return await send(command)

    async def _acquire_by_slot(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # Redis Cluster runs a script on one slot: one round trip per hash tag. The result is
        # the one a single script would give (others may briefly see what is undone here):
        # a later group refusing undoes the earlier groups' reservations, and the groups
        # after it are asked what they would answer (reserving nothing), so every check's
        # usage and wait is reported; a shadow check refusing anywhere undoes the shadow
        # checks the other groups charged (a decision charges them only when all fit).
        groups: dict[str, list[int]] = {}
        for i, check in enumerate(checks):
            groups.setdefault(hash_tag(check.key), []).append(i)
        n = len(checks)
        merged = Verdict(True, True, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n)
        asked: list[tuple[list[int], Verdict]] = []
        taken: list[tuple[list[int], Verdict]] = []
        pending = list(groups.values())
        for g, indexes in enumerate(pending):
            part = await self._acquire_group([checks[i] for i in indexes], now, lease_id, lease_ttl)
            asked.append((indexes, part))
            if not part.admitted:
                merged.admitted = merged.charged = False
                rest = pending[g + 1 :]
                parts = await asyncio.gather(
                    *(
                        self._acquire_group([checks[i] for i in group], now, lease_id, 0, dry=True)
                        for group in rest
                    )
                )
                asked += zip(rest, parts, strict=True)
                break
            taken.append((indexes, part))
        for indexes, part in asked:
            for j, i in enumerate(indexes):
                merged.usage[i], merged.retry_after[i] = part.usage[j], part.retry_after[j]
                merged.reset[i], merged.window_ids[i] = part.reset[j], part.window_ids[j]
        shadow_refused = any(merged.retry_after)
        undone: list[int] = []
        for indexes, part in taken:
            group_fit = not any(part.retry_after)
            for i in indexes:
                check = checks[i]
                if check.window < 0 or (check.shadow and not group_fit):
                    continue  # nothing was reserved for it
                if not merged.admitted or (check.shadow and shadow_refused):
                    undone.append(i)
                    merged.usage[i] -= check.cost
        if undone:
            charges = [
                Charge(checks[i].key, checks[i].window, merged.window_ids[i], -checks[i].cost)
                for i in undone
                if checks[i].window > 0
            ]
            leases = [Lease(checks[i].key, lease_id) for i in undone if checks[i].window == 0]
            await self._settle_now(charges, leases, now)
        return merged

    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        # Settlements of requests that finish close together go to Redis together: queued
        # here, sent by one background call once the event loop turns (one script call per
        # batch instead of one per request; each subject is read and written once a batch).
        if not charges and not leases:
            return
        if not self._settlements:  # the first of this turn: schedule the batch
            self._pending.spawn(self._send_settlements())
        self._settlements += _settlement_changes(charges, leases)
        if now > self._settle_at:
            self._settle_at = now

    async def _send_settlements(self) -> None:
        changes, self._settlements = self._settlements, []
        # The latest `now` of this batch only: a later batch must not judge leases by an
        # earlier batch's clock (after the clock stepped back, live leases were dropped).
        now, self._settle_at = self._settle_at, 0.0
        for start in range(0, len(changes), _SETTLE_BATCH):
            batch = changes[start : start + _SETTLE_BATCH]
            try:
                await self._change(batch, now)
            except Exception as exc:
                # Leases then expire on their own (lease TTL); token corrections are lost.
                log.warning(
                    "hydraguard: %d settlements failed, leases will expire by TTL: %s",
                    len(batch),
                    exc,
                )
                if self.on_settle_error is not None:
                    self.on_settle_error()

    async def _settle_now(
        self, charges: Sequence[Charge], leases: Sequence[Lease], now: float
    ) -> None:
        await self._change(_settlement_changes(charges, leases), now)

    async def _change(self, changes: Sequence[tuple[int, str, int, Any, float]], now: float) -> int:
        """Run settle.lua over (mode, key, window, window id or lease id, amount) changes:
        one call on a single node; on a Cluster one per hash tag, concurrently (a batch of
        settlements spans many accounts). Returns the fields removed."""
        groups: dict[str, list[tuple[int, str, int, Any, float]]] = {}
        for change in changes:
            groups.setdefault(hash_tag(change[1]) if self.cluster else "", []).append(change)

        async def run(group: list[tuple[int, str, int, Any, float]]) -> int:
            keys: list[str] = []
            index: dict[str, int] = {}
            spec: list[Any] = [now]
            for mode, key, window, window_id, amount in group:
                state_key, field = split_key(key)
                k = index.get(state_key)
                if k is None:
                    k = index[state_key] = len(keys) + 1
                    keys.append(state_key)
                # A float: Lua's numbers are doubles anyway, and orjson refuses an int
                # beyond 64 bits, which would fail the whole batch and leak its leases.
                spec += (mode, k, field, window, window_id, float(amount))
            command = ("EVALSHA", self._settle.sha, len(keys), *keys, orjson.dumps(spec))
            return int(await self._run(self._settle, command, self._send))

        if len(groups) == 1:
            return await run(next(iter(groups.values())))
        return sum(await asyncio.gather(*map(run, groups.values())))

    async def _states(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The subjects' states of ``keys`` (check keys), read with one MGET."""
        names = sorted({split_key(key)[0] for key in keys})
        if not names:
            return {}
        if self.cluster:
            blobs = await self.client.mget_nonatomic(names)
        else:
            blobs = await self.client.mget(names)
        return {name: _state(blob) for name, blob in zip(names, blobs, strict=True)}

    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        states = await self._states([check.key for check in checks])
        out: list[float] = []
        for check in checks:
            state_key, field = split_key(check.key)
            entry = states[state_key].get(field)
            if check.window == -1:
                out.append(0.0)
            elif check.window == 0:
                live = entry.values() if isinstance(entry, dict) else ()
                out.append(float(sum(1 for expiry in live if expiry > now)))
            else:
                _, current, previous, elapsed = _window_counts(entry, now, check.window)
                out.append(window_usage(previous, current, elapsed, check.window, self.sliding))
        return out

    async def merge_windows(
        self, sources: Sequence[str], target: str, window: int, now: float
    ) -> None:
        sources = [key for key in sources if key != target]
        if not sources:
            return
        states = await self._states(sources)
        # Window by window, as MemoryStorage.merge_windows: each source as usage() reads it.
        counters = [
            _window_counts(states[state_key].get(field), now, window)
            for state_key, field in map(split_key, sources)
        ]
        await self._add(merged_entries(target, window, counters), now)

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

    async def clear_flag(self, key: str, now: float) -> bool:
        return await self._change([(4, key, 0, 0, 0)], now) > 0

    async def flag_ttl(self, key: str, now: float) -> float | None:
        state_key, field = split_key(key)
        expiry = (await self._states([key]))[state_key].get(field)
        left = float(expiry) - now if isinstance(expiry, int | float) else 0.0
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
        if split_key(prefix)[1]:
            # The prefix reaches into a subject's state (e.g. one limit of an account).
            removed += await self._change([(5, prefix, 0, 0, 0)], time.time())
        return removed

    async def reset_connections(self) -> None:
        """Drop pooled connections (after an outage they may point at a dead server process)."""
        await self.client.connection_pool.disconnect()
        if self._direct is not None:
            await self._direct.disconnect()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def warm(self) -> None:
        await self.client.ping()
        if self._direct is not None:
            await self._send_direct(("PING",))  # the decisions' own connection
        for script in (self._acquire, self._settle):
            await self.client.script_load(script.script)

    async def drain(self) -> None:
        await self._pending.drain()

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()
        if self._direct is not None:
            await self._direct.disconnect()
        # Through Sentinel, limits' bridge also holds the clients of the sentinels and of the
        # replicas; closing only the primary's client left their connections open.
        bridge = getattr(self._limits_storage, "bridge", None)
        sentinel = getattr(bridge, "sentinel", None)
        if sentinel is not None:
            for client in (*sentinel.sentinels, getattr(bridge, "storage_replica", None)):
                if client is not None:
                    await client.aclose()
