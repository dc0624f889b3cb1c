"""When retention forgets: the memory index as it observes, a Redis-backed linker in
bounded batches in the background; and what the linker remembers does not bring a
forgotten account back without its evidence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cluster_harness import PAY, REDIS_URL, T0

from hydraguard.cluster.config import ClusteringConfig
from hydraguard.cluster.index import ClusterIndex
from hydraguard.cluster.linker import Linker
from hydraguard.cluster.model import cluster_id
from hydraguard.storage.memory import MemoryStorage
from hydraguard.storage.redis import RedisStorage

R = 100.0
CONFIG = ClusteringConfig(retention=R)


def test_observing_forgets_a_few_idle_accounts_at_a_time() -> None:
    index = ClusterIndex(CONFIG)
    for i in range(10):
        index.observe(f"old-{i}", {PAY: (f"card-{i}",)}, T0)
    values = len(index.value_text)
    index.observe("new-0", {PAY: ("new-card-0",)}, T0 + R + 1)
    assert index.stats().accounts == 9  # two idle accounts examined per observation
    for i in range(1, 5):
        index.observe(f"new-{i}", {PAY: (f"new-card-{i}",)}, T0 + R + 1)
    assert index.stats().accounts == 5
    assert len(index.value_text) == values  # the new cards took the forgotten ones' numbers
    assert index.observe("late", {PAY: ("card-3",)}, T0 + R + 2) == cluster_id("late")


async def test_a_memory_linker_keeps_an_account_that_keeps_sending_the_same_signals() -> None:
    linker = Linker(CONFIG, MemoryStorage())
    for t in (0, 60, 120):  # unchanged signals: the linker skips observing, but touches
        await linker.resolve("a", {PAY: ("card",)}, T0 + t)
    assert await linker.resolve("b", {PAY: ("card",)}, T0 + 150) == (cluster_id("a"), 2)


async def test_a_memory_linker_observes_a_forgotten_account_afresh() -> None:
    linker = Linker(CONFIG, MemoryStorage())
    await linker.resolve("x", {PAY: ("card",)}, T0)
    await linker.resolve("y", {PAY: ("other",)}, T0 + R + 1)  # forgets x
    assert linker.index.stats().accounts == 1
    await linker.resolve("x", {PAY: ("card",)}, T0 + R + 2)  # what x sent last time
    assert await linker.resolve("z", {PAY: ("card",)}, T0 + R + 3) == (cluster_id("x"), 2)


@pytest.fixture
async def redis_linker() -> AsyncIterator[Linker]:
    storage = RedisStorage(REDIS_URL)

    async def clean() -> None:
        keys = [k async for k in storage.client.scan_iter(match="{hydraguard:cluster}*")]
        if keys:
            await storage.client.delete(*keys)

    await clean()
    linker = Linker(CONFIG, storage)
    yield linker
    await linker.drain()
    await clean()
    await storage.aclose()


@pytest.mark.redis
async def test_a_redis_linker_forgets_in_bounded_background_batches(redis_linker: Linker) -> None:
    linker, index = redis_linker, redis_linker.index

    async def resolve_at(t: float) -> int:
        await linker.resolve("new", {PAY: ("new-card",)}, T0 + R + t)
        await linker.drain()
        return (await index.stats()).accounts

    for i in range(50):
        await index.observe_sized(f"old-{i}", {PAY: (f"card-{i}",)}, T0)
    assert await resolve_at(1) == 31  # one batch of 20 forgotten, and "new" linked
    assert await resolve_at(1.05) == 31  # the next sweep waits
    assert await resolve_at(1.2) == 11  # a full batch: another soon after
    assert await resolve_at(1.4) == 1
    assert await linker.resolve("late", {PAY: ("card-7",)}, T0 + R + 2) == (cluster_id("late"), 1)
