"""Redis specifics: one JSON state per subject, keys that expire on their own, scripts
reloaded after a flush or restart, the hiredis command packing, and the connections
decisions are sent on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import DataError

from hydraguard import load_policy
from hydraguard.admit.plan import GLOBAL, Planner
from hydraguard.metrics import metrics_for
from hydraguard.storage.base import Charge, Check, Lease
from hydraguard.storage.redis import RedisStorage, split_key
from hydraguard.storage.redis_connections import DirectConnections
from hydraguard.storage.redis_packing import HiredisPacking
from hydraguard.storage.resilient import ResilientStorage

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get(
    "HYDRAGUARD_TEST_REDIS",
    f"redis://127.0.0.1:{os.environ.get('HYDRAGUARD_TEST_REDIS_PORT', '6379')}/10",
)

T0 = 6_000_000.0  # a window boundary for 60 s windows


@pytest.fixture
async def storage() -> AsyncIterator[RedisStorage]:
    made = RedisStorage(REDIS_URL, timeout=5.0)
    await made.client.flushdb()
    yield made
    await made.client.flushdb()
    await made.aclose()


async def keys(storage: RedisStorage) -> list[str]:
    return sorted(k.decode() for k in await storage.client.keys("*"))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("hg:{a:acct-1}:r60", ("hg:{a:acct-1}:s", ":r60")),
        ("hg:{g}:t60~500", ("hg:{g}:s", ":t60~500")),
        ("hg:{a:x}", ("hg:{a:x}:s", "")),
        ("plain:key", ("plain:key", "")),
        ("odd:{}:key", ("odd:{}:key", "")),  # an empty tag is no tag, as in Redis Cluster
        ("}{a}:r60", ("}{a}:s", ":r60")),  # the tag starts at the first "{"
        ("{{a}}:c", ("{{a}:s", "}:c")),  # ... and ends at the first "}" after it
    ],
)
def test_split_key_follows_the_hash_tag(key: str, expected: tuple[str, str]) -> None:
    assert split_key(key) == expected


async def state(storage: RedisStorage, key: str) -> dict[str, object]:
    found = msgpack.unpackb(await storage.client.get(key))
    assert isinstance(found, dict)
    return found


async def test_a_decision_keeps_one_state_per_subject_with_its_own_expiry(
    storage: RedisStorage,
) -> None:
    plan = Planner(load_policy()).plan("acct-1", "default", 100, "c-1")
    verdict = await storage.acquire(plan.checks, T0 + 5, "lease-1", 600)
    assert verdict.admitted
    assert await keys(storage) == ["hg:{a:acct-1}:s", "hg:{c:c-1}:s", "hg:{g}:s"]
    # Long enough for the previous day window to count, not forever.
    for key in ("hg:{a:acct-1}:s", "hg:{c:c-1}:s"):
        assert 2 * 86400 <= await storage.client.ttl(key) <= 2 * 86400 + 120
    assert 121 <= await storage.client.ttl("hg:{g}:s") <= 121 + 60
    account = await state(storage, "hg:{a:acct-1}:s")
    # 4 window limits as [window id, current, previous], the lease set, the expiry mark.
    assert sorted(account) == [":c", ":r60", ":r86400", ":t60", ":t86400", "~e"]
    assert account[":r60"] == [int((T0 + 5) // 60), 1, 0]
    assert account[":t86400"] == [int((T0 + 5) // 86400), 100, 0]
    assert account[":c"] == {"lease-1": pytest.approx(T0 + 5 + 600)}
    storage.settle([], [Lease(plan.checks[i].key, "lease-1") for i in plan.lease_checks], T0 + 6)
    await storage.drain()
    assert await storage.usage(plan.checks, T0 + 6) == pytest.approx(
        [0.0 if c.window <= 0 else c.cost for c in plan.checks]
    )


async def test_a_shorter_window_never_shortens_the_key_ttl(storage: RedisStorage) -> None:
    day = Check("hg:{a:x}:r86400", 100, 86400, 1)
    minute = Check("hg:{a:x}:r60", 100, 60, 1)
    await storage.acquire([day, minute], T0 + 1, "l", 30)
    long_ttl = await storage.client.ttl("hg:{a:x}:s")
    # A later plan without the day window rolls the minute window: the day count stays.
    await storage.acquire([minute], T0 + 61, "l", 30)
    assert await storage.client.ttl("hg:{a:x}:s") >= long_ttl - 2
    assert await storage.usage([day], T0 + 61) == [pytest.approx(1.0)]


async def test_leases_keep_the_key_alive_and_expire_with_it(storage: RedisStorage) -> None:
    slots = Check("hg:{a:y}:c", 5, 0, 1)
    await storage.acquire([slots], T0, "l1", 30)
    assert 31 <= await storage.client.ttl("hg:{a:y}:s") <= 31 + 60


async def test_block_flag_lives_in_the_subject_state(storage: RedisStorage) -> None:
    flag = Check("hg:{a:z}:b", 1, -1, 1)
    window = Check("hg:{a:z}:r60", 100, 60, 1)
    await storage.set_flag(flag.key, 30, T0)
    assert await keys(storage) == ["hg:{a:z}:s"]
    assert 30 <= await storage.client.ttl("hg:{a:z}:s") <= 30 + 61
    refused = await storage.acquire([flag, window], T0 + 10, "l", 30)
    assert not refused.admitted and refused.retry_after[0] == pytest.approx(20.0)
    assert await storage.flag_ttl(flag.key, T0 + 10) == pytest.approx(20.0)
    assert await storage.clear_flag(flag.key, T0 + 10)
    assert not await storage.clear_flag(flag.key, T0 + 10)
    assert await storage.flag_ttl(flag.key, T0 + 10) is None
    assert (await storage.acquire([flag, window], T0 + 11, "l", 30)).admitted


async def test_clear_reaches_into_a_subject_state(storage: RedisStorage) -> None:
    checks = [Check("hg:{a:w}:r60", 10, 60, 1), Check("hg:{a:w}:t60", 1000, 60, 7)]
    await storage.acquire(checks, T0 + 1, "l", 30)
    assert await storage.clear("hg:{a:w}:t") == 1  # the token limit
    assert await storage.usage(checks, T0 + 1) == [1.0, 0.0]
    assert await storage.clear("hg:{a:w}") == 1
    assert await keys(storage) == []


async def test_lifting_the_last_flag_deletes_the_state(storage: RedisStorage) -> None:
    await storage.set_flag("hg:{a:f}:b", 30, T0)
    assert await storage.clear_flag("hg:{a:f}:b", T0)
    assert await keys(storage) == []


async def test_a_decision_keeps_the_ttl_unless_it_needs_longer(storage: RedisStorage) -> None:
    minute = Check("hg:{a:k}:r60", 100, 60, 1)
    await storage.acquire([minute], T0 + 1, "l", 30)
    await storage.client.pexpire("hg:{a:k}:s", 500_000)  # a mark: only a SET with PX moves it
    await storage.acquire([minute], T0 + 2, "l", 30)
    assert 499 <= await storage.client.ttl("hg:{a:k}:s") <= 500
    assert (await state(storage, "hg:{a:k}:s"))[":r60"][1] == 2


@pytest.mark.parametrize("junk", [b"not msgpack \xc1", b"\x05", b"\x93\x01\x02\x03"])
async def test_a_state_key_holding_junk_reads_as_empty_and_heals(
    storage: RedisStorage, junk: bytes
) -> None:
    check = Check("hg:{a:j}:r60", 10, 60, 1)
    await storage.client.set("hg:{a:j}:s", junk)
    assert await storage.usage([check], T0 + 1) == [0.0]
    assert (await storage.acquire([check], T0 + 1, "l", 30)).usage == [1.0]
    assert (await state(storage, "hg:{a:j}:s"))[":r60"][1] == 1  # rewritten as a state


async def test_an_older_layout_is_left_alone(storage: RedisStorage) -> None:
    # The layout before this one kept a hash per subject under the bare tag. During a
    # rolling upgrade old replicas keep using it: new replicas neither read nor overwrite
    # it (each side counts on its own until the old keys expire).
    await storage.client.hset("hg:{a:old}", mapping={":r60.i": 1, ":r60.c": 5, "~e": 1})
    check = Check("hg:{a:old}:r60", 10, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).usage == [1.0]
    assert await storage.client.type("hg:{a:old}") == b"hash"
    assert await storage.client.hget("hg:{a:old}", ":r60.c") == b"5"
    assert await storage.usage([check], T0 + 1) == [1.0]


async def test_settlements_finishing_together_go_in_one_script_call(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = Check("hg:{a:b}:t60", 100_000, 60, 100)
    slots = Check("hg:{a:b}:c", 50, 0, 1)
    verdicts = await asyncio.gather(
        *(storage.acquire([tokens, slots], T0 + 1, f"l{i}", 30) for i in range(40))
    )
    assert all(v.admitted for v in verdicts)
    assert await storage.usage([tokens, slots], T0 + 1) == [4000.0, 40.0]
    calls: list[int] = []
    run = storage._run

    async def counted(script: Any, command: Sequence[Any], send: Any) -> Any:
        calls.append(command[2])  # EVALSHA sha numkeys ...
        return await run(script, command, send)

    monkeypatch.setattr(storage, "_run", counted)
    for i, verdict in enumerate(verdicts):  # 40 responses done within one loop turn
        charge = Charge(tokens.key, 60, verdict.window_ids[0], 30 - 100)
        storage.settle([charge], [Lease(slots.key, f"l{i}")], T0 + 2)
    await storage.drain()
    assert calls == [1]  # one call, the subject's state read and written once
    assert await storage.usage([tokens, slots], T0 + 2) == [40 * 30.0, 0.0]


async def test_a_decision_stores_each_check_where_split_key_says(storage: RedisStorage) -> None:
    # The decision splits keys on a fast path of its own (a subject's checks come together):
    # every kind of key, in an order that tries it, must land where split_key puts it.
    keys = [
        "hg:{a:k}:r60",
        "hg:{a:k}:t60",
        "hg:{a:k",  # the same text before "}", but no "}": a key of its own
        "}{a}:r60",
        "odd:{}:key",
        "odd:{}x",
        "plain:key",
        "plain:key}x",
        "hg:{g}:r60",
        "hg:{a:k}:r3600",  # a subject seen before, not just before
    ]
    checks = [Check(key, 100, 60, i + 1) for i, key in enumerate(keys)]
    assert (await storage.acquire(checks, T0 + 1, "l", 30)).admitted
    states = await storage._states(keys)
    for i, key in enumerate(keys):
        state_key, field = split_key(key)
        assert states[state_key][field][1] == i + 1, key


async def test_a_decision_given_up_in_flight_leaves_no_reply_behind(storage: RedisStorage) -> None:
    # Decisions write and read their connections directly: one cancelled while its reply
    # is on the way (storage.timeout) must not leave that reply for the next decision.
    check, other = Check("hg:{a:late}:r60", 100, 60, 1), Check("hg:{a:next}:r60", 100, 60, 7)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).usage == [1.0]
    pauser = aioredis.Redis.from_url(REDIS_URL)
    await pauser.execute_command("CLIENT", "PAUSE", 300, "ALL")  # a stalled server
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await storage.acquire([check], T0 + 2, "l", 30)
    assert (await storage.acquire([other], T0 + 3, "l", 30)).usage == [7.0]
    await pauser.aclose()


async def test_a_decision_after_the_server_closed_its_idle_connection_reconnects(
    storage: RedisStorage,
) -> None:
    # A connection the server closed while it sat idle (a restart, an idle timeout) is
    # reopened: the decision does not fail. (Through redis-py 8.1's client it did: its pool
    # skips that check while maintenance notifications are on "auto", the default.)
    check = Check("hg:{a:closed}:r60", 100, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).usage == [1.0]
    killer = aioredis.Redis.from_url(REDIS_URL)
    await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await killer.aclose()
    await asyncio.sleep(0.05)  # the event loop sees the connections close
    assert (await storage.acquire([check], T0 + 2, "l", 30)).usage == [2.0]
    await storage.client.connection_pool.disconnect()  # the fixture's own, killed too


async def test_reset_connections_closes_the_decisions_connections_too(
    storage: RedisStorage,
) -> None:
    check = Check("hg:{a:r}:r60", 100, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).admitted
    assert storage._direct is not None
    made = list(storage._direct._made)
    assert made and all(conn.is_connected for conn in made)
    await storage.reset_connections()
    assert not any(conn.is_connected for conn in made)
    assert (await storage.acquire([check], T0 + 2, "l", 30)).usage == [2.0]  # reconnects


async def test_direct_connections_beyond_their_bound_wait_their_turn(
    storage: RedisStorage,
) -> None:
    direct = DirectConnections(storage.client.connection_pool, in_flight=2)
    replies = await asyncio.gather(*(direct.send([("ECHO", str(i))]) for i in range(20)))
    assert replies == [[str(i).encode()] for i in range(20)]
    assert len(direct._made) == 2
    # A call giving up while it waits for a connection takes none with it.
    busy = [asyncio.create_task(direct.send([("BLPOP", "nothing", 0.2)])) for _ in range(2)]
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(direct.send([("PING",)]))
    await asyncio.sleep(0.01)
    waiting.cancel()
    assert await asyncio.gather(*busy) == [[None], [None]]
    assert await asyncio.gather(*(direct.send([("PING",)]) for _ in range(4))) == [[b"PONG"]] * 4
    assert len(direct._made) == 2
    # ... nor does one handed a connection just as it gave up.
    taken = [direct._idle.pop(), direct._idle.pop()]
    waiting = asyncio.create_task(direct.send([("PING",)]))
    await asyncio.sleep(0)
    direct._give_back(taken.pop())
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    direct._give_back(taken.pop())
    assert len(direct._idle) == 2
    await direct.disconnect()


async def test_scripts_are_reloaded_after_a_script_flush(storage: RedisStorage) -> None:
    check = Check("hg:{a:s}:r60", 10, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).admitted
    await storage.client.script_flush()  # what a restarted server looks like to a client
    assert (await storage.acquire([check], T0 + 2, "l", 30)).usage == [2.0]
    await storage.client.script_flush()
    await storage.add_usage([(check.key, 60, int(T0 // 60), 3)])
    assert await storage.usage([check], T0 + 3) == [5.0]


async def test_concurrent_calls_meeting_noscript_load_the_script_once(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = Check("hg:{a:n}:r60", 1000, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).admitted
    await storage.client.script_flush()  # a restarted server, under load
    loads: list[str] = []
    load = storage.client.script_load

    async def counted(source: str) -> Any:
        loads.append(source)
        return await load(source)

    monkeypatch.setattr(storage.client, "script_load", counted)
    verdicts = await asyncio.gather(
        *(storage.acquire([check], T0 + 2, f"l{i}", 30) for i in range(100))
    )
    assert all(v.admitted for v in verdicts)
    assert len(loads) == 1
    assert await storage.usage([check], T0 + 2) == [101.0]


async def test_concurrent_decisions_share_round_trips_and_stay_exact(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[int] = []  # commands per round trip
    assert storage._direct is not None
    send = storage._direct.send

    async def counted(commands: Sequence[Sequence[Any]]) -> list[Any]:
        trips.append(len(commands))
        return await send(commands)

    monkeypatch.setattr(storage._direct, "send", counted)
    check = Check("hg:{a:p}:r60", 50, 60, 1)
    other = Check("hg:{g}:t60", 1_000_000, 60, 3)
    verdicts = await asyncio.gather(
        *(storage.acquire([other, check], T0 + 1, f"l{i}", 30) for i in range(200))
    )
    assert sum(v.admitted for v in verdicts) == 50
    assert await storage.usage([other, check], T0 + 1) == [150.0, 50.0]
    assert sum(trips) == 200  # every decision sent once...
    assert len(trips) <= 10  # ...in a few round trips, not 200


async def test_failed_settlements_are_counted_in_the_metrics() -> None:
    registry = CollectorRegistry()
    dead = RedisStorage("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
    storage = ResilientStorage(dead, load_policy().storage, metrics_for(registry))
    dead.settle([], [Lease("hg:{a:q}:c", "l1")], T0)
    dead.settle([], [Lease("hg:{a:q}:c", "l2")], T0)  # same loop turn: one batch, one error
    await dead.drain()
    assert registry.get_sample_value(
        "hydraguard_storage_errors_total", {"operation": "settle"}
    ) == pytest.approx(1.0)
    await storage.aclose()


async def test_hiredis_packing_matches_redis_py() -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    plain = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    fast = type("Fast", (HiredisPacking, type(plain)), {})(
        **client.connection_pool.connection_kwargs
    )
    for args in (
        ("PING",),
        ("EVALSHA", "a" * 40, 2, "hg:{a:é}", b"\x00\xff", 1.5, -3),
        ("CONFIG GET", "maxmemory"),
    ):
        assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", True)  # refused like redis-py does
    await client.aclose()


async def test_a_plans_decision_is_packed_from_its_shape_as_any_checks_would_be(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plan comes with its key layout (admit/plan.py), packed once per tier instead
    # of splitting every key: the result must be what the same checks give one by one.
    planner = Planner(load_policy())
    planned = planner.plan("acct-1", "default", 100, "c-1")
    plain = list(planner.plan("acct-2", "default", 100, "c-2").checks)
    with monkeypatch.context() as patched:

        def no_split(key: str) -> tuple[str, str]:
            raise AssertionError(f"split {key!r}: the shape was not used")

        patched.setattr("hydraguard.storage.redis.split_key", no_split)
        shaped = await storage.acquire(planned.checks, T0 + 5, "lease-1", 600, planned.key_layout)
    unshaped = await storage.acquire(plain, T0 + 5, "lease-1", 600)
    assert shaped.admitted and unshaped.admitted
    # The same but for the global limits, which the second decision saw charged once.
    assert planned.key_layout is not None
    own = [i for i, scope in enumerate(planned.key_layout.shape.scopes) if scope != GLOBAL]
    for field in ("usage", "retry_after", "reset", "window_ids"):
        assert [getattr(shaped, field)[i] for i in own] == [
            getattr(unshaped, field)[i] for i in own
        ]
    assert own and len(own) < len(plain)
    for a, b in (("a:acct-1", "a:acct-2"), ("c:c-1", "c:c-2")):
        assert await state(storage, f"hg:{{{a}}}:s") == await state(storage, f"hg:{{{b}}}:s")
    # The limits travel with each decision, not with the shape: a throttled account of
    # the same tier (a factor of 0.5) is refused at half its limit.
    limit = planned.checks[1].limit  # the account's requests per minute
    throttled = planner.plan("acct-3", "default", 0, "c-3", 0.5)
    assert throttled.key_layout is not None
    assert throttled.key_layout.shape is planned.key_layout.shape
    admitted = []
    for i in range(limit // 2 + 1):
        verdict = await storage.acquire(throttled.checks, T0 + 6, f"t{i}", 60, throttled.key_layout)
        admitted.append(verdict.admitted)
        leases = [Lease(throttled.checks[c].key, f"t{i}") for c in throttled.lease_checks]
        storage.settle([], leases, T0 + 6)  # (its concurrency limit is halved too)
        await storage.drain()
    assert admitted == [True] * (limit // 2) + [False]
    assert verdict.refusing == [1]
