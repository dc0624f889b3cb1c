"""Redis specifics: one hash per subject, keys that expire on their own, scripts reloaded
after a flush or restart, and the hiredis command packing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from hydraguard import load_policy
from hydraguard.admit.plan import Planner
from hydraguard.storage.base import Check, Lease
from hydraguard.storage.redis import RedisStorage, split_key
from hydraguard.storage.redis_packing import HiredisPacking

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
        ("hg:{a:acct-1}:r60", ("hg:{a:acct-1}", ":r60")),
        ("hg:{g}:t60~500", ("hg:{g}", ":t60~500")),
        ("hg:{a:x}", ("hg:{a:x}", "")),
        ("plain:key", ("plain:key", "")),
        ("odd:{}:key", ("odd:{}:key", "")),  # an empty tag is no tag, as in Redis Cluster
    ],
)
def test_split_key_follows_the_hash_tag(key: str, expected: tuple[str, str]) -> None:
    assert split_key(key) == expected


async def test_a_decision_keeps_one_hash_per_subject_with_its_own_expiry(
    storage: RedisStorage,
) -> None:
    plan = Planner(load_policy()).plan("acct-1", "default", 100, "c-1")
    verdict = await storage.acquire(plan.checks, T0 + 5, "lease-1", 600)
    assert verdict.admitted
    assert await keys(storage) == ["hg:{a:acct-1}", "hg:{c:c-1}", "hg:{g}"]
    # Long enough for the previous day window to count, not forever.
    for key in ("hg:{a:acct-1}", "hg:{c:c-1}"):
        assert 2 * 86400 <= await storage.client.ttl(key) <= 2 * 86400 + 120
    assert 121 <= await storage.client.ttl("hg:{g}") <= 121 + 60
    fields = await storage.client.hkeys("hg:{a:acct-1}")
    assert len(fields) == 3 * 4 + 2  # 4 window limits, the lease set, the expiry mark
    storage.settle([], [Lease(plan.checks[i].key, "lease-1") for i in plan.lease_checks], T0 + 6)
    await storage.drain()
    assert await storage.usage(plan.checks, T0 + 6) == pytest.approx(
        [0.0 if c.window <= 0 else c.cost for c in plan.checks]
    )


async def test_a_shorter_window_never_shortens_the_hash_ttl(storage: RedisStorage) -> None:
    day = Check("hg:{a:x}:r86400", 100, 86400, 1)
    minute = Check("hg:{a:x}:r60", 100, 60, 1)
    await storage.acquire([day, minute], T0 + 1, "l", 30)
    long_ttl = await storage.client.ttl("hg:{a:x}")
    # A later plan without the day window rolls the minute window: the day count stays.
    await storage.acquire([minute], T0 + 61, "l", 30)
    assert await storage.client.ttl("hg:{a:x}") >= long_ttl - 2
    assert await storage.usage([day], T0 + 61) == [pytest.approx(1.0)]


async def test_leases_keep_the_hash_alive_and_expire_with_it(storage: RedisStorage) -> None:
    slots = Check("hg:{a:y}:c", 5, 0, 1)
    await storage.acquire([slots], T0, "l1", 30)
    assert 31 <= await storage.client.ttl("hg:{a:y}") <= 31 + 60


async def test_block_flag_lives_in_the_subject_hash(storage: RedisStorage) -> None:
    flag = Check("hg:{a:z}:b", 1, -1, 1)
    window = Check("hg:{a:z}:r60", 100, 60, 1)
    await storage.set_flag(flag.key, 30, T0)
    assert await keys(storage) == ["hg:{a:z}"]
    assert 30 <= await storage.client.ttl("hg:{a:z}") <= 30 + 61
    refused = await storage.acquire([flag, window], T0 + 10, "l", 30)
    assert not refused.admitted and refused.retry_after[0] == pytest.approx(20.0)
    assert await storage.flag_ttl(flag.key, T0 + 10) == pytest.approx(20.0)
    assert await storage.clear_flag(flag.key)
    assert not await storage.clear_flag(flag.key)
    assert await storage.flag_ttl(flag.key, T0 + 10) is None
    assert (await storage.acquire([flag, window], T0 + 11, "l", 30)).admitted


async def test_clear_reaches_into_a_subject_hash(storage: RedisStorage) -> None:
    checks = [Check("hg:{a:w}:r60", 10, 60, 1), Check("hg:{a:w}:t60", 1000, 60, 7)]
    await storage.acquire(checks, T0 + 1, "l", 30)
    assert await storage.clear("hg:{a:w}:t") == 3  # the token limit's three fields
    assert await storage.usage(checks, T0 + 1) == [1.0, 0.0]
    assert await storage.clear("hg:{a:w}") == 1
    assert await keys(storage) == []


async def test_scripts_are_reloaded_after_a_script_flush(storage: RedisStorage) -> None:
    check = Check("hg:{a:s}:r60", 10, 60, 1)
    assert (await storage.acquire([check], T0 + 1, "l", 30)).admitted
    await storage.client.script_flush()  # what a restarted server looks like to a client
    assert (await storage.acquire([check], T0 + 2, "l", 30)).usage == [2.0]
    await storage.client.script_flush()
    await storage.add_usage([(check.key, 60, int(T0 // 60), 3)])
    assert await storage.usage([check], T0 + 3) == [5.0]


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
