"""The memory and the Redis index, driven by one random workload, agree on everything
they answer: cluster ids, merges and splits, explanations, statistics, what each account
holds. The workload rotates values past ``max_values_per_account``, saturates values,
links and unlinks by hand and forgets idle accounts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cluster_harness import T0, Harness

from hydraguard.cluster.config import (
    ClientIpSource,
    ClusteringConfig,
    SignalSpec,
    TemplateSource,
)

pytestmark = pytest.mark.redis

R = 40.0  # retention, seconds


def config(retention: float) -> ClusteringConfig:
    """Small fanouts and caps, so that a short workload saturates values and rotates
    accounts' values out; a strong signal saturates too."""
    return ClusteringConfig(
        retention=retention,
        signals={
            "org": SignalSpec(
                header="x-org", explicit=True, max_fanout=6, max_values_per_account=2
            ),
            "payment": SignalSpec(
                header="x-card", weight=1.0, max_fanout=4, max_values_per_account=2
            ),
            "device": SignalSpec(
                header="x-device", weight=0.6, max_fanout=5, max_values_per_account=3
            ),
            "ja4": SignalSpec(header="x-ja4", weight=0.2, max_fanout=4, max_values_per_account=2),
            "subnet": SignalSpec(
                client_ip=ClientIpSource(), weight=0.3, max_fanout=6, max_values_per_account=3
            ),
            "template": SignalSpec(
                template=TemplateSource(bands=2),
                weight=0.3,
                max_fanout=5,
                max_values_per_account=4,
            ),
        },
    )


POOLS = {"org": 3, "payment": 8, "device": 10, "ja4": 5, "subnet": 8, "template": 12}


def signals(rng: random.Random, fresh: list[int]) -> dict[str, tuple[str, ...]]:
    """One to three signals; a value from a small shared pool, or one never seen before
    (an account rotating its device, JA4, subnet...)."""
    out = {}
    for name in rng.sample(sorted(POOLS), rng.randint(1, 3)):
        fresh[0] += 1
        value = f"new-{fresh[0]}" if rng.random() < 0.4 else f"{rng.randrange(POOLS[name])}"
        if name == "template":
            out[name] = (f"{value}:b0", f"{value}:b1")
        elif name == "device" and rng.random() < 0.2:
            out[name] = (value, f"other-{fresh[0]}")  # two values first seen together
        else:
            out[name] = (value,)
    return out


@pytest.fixture
async def both() -> AsyncIterator[tuple[Harness, Harness]]:
    memory, redis = Harness("memory"), Harness("redis")
    yield memory, redis
    await redis.close()


async def same(
    harnesses: tuple[Harness, Harness], indexes: list[Any], call: str, *args: Any
) -> Any:
    results = [await getattr(index, call)(*args) for index in indexes]
    assert results[0] == results[1], (call, args)
    memory, redis = harnesses
    assert memory.merges == redis.merges and memory.splits == redis.splits, (call, args)
    return results[0]


class Observer:
    """Observes on both indexes. The memory index forgets idle accounts as it observes
    (a few at a time, right after touching the observed account); a Redis-backed linker
    asks for the same in the background. Here Redis is asked at the same moments, for as
    many, so both forget the same accounts."""

    def __init__(self, harnesses: tuple[Harness, Harness], indexes: list[Any]) -> None:
        self.harnesses, self.indexes = harnesses, indexes
        self.swept: list[tuple[float, int, list[str]]] = []
        self.forgotten = 0
        memory = indexes[0].index
        sweep = memory.sweep

        def recorded(now: float, limit: int = 100) -> list[str]:
            gone = sweep(now, limit)
            self.swept.append((now, limit, gone))
            self.forgotten += len(gone)
            return gone

        memory.sweep = recorded

    async def observe(self, account: str, signals: dict[str, tuple[str, ...]], ts: float) -> None:
        memory, redis = self.indexes
        self.swept.clear()
        cid = await memory.observe(account, signals, ts)
        if self.swept:
            await redis.observe(account, {}, ts)  # touched first, as memory touches it
            for now, limit, gone in self.swept:
                assert await redis.sweep(now, limit) == gone, (account, ts)
        assert await redis.observe(account, signals, ts) == cid, (account, signals, ts)
        harnesses = self.harnesses
        assert harnesses[0].merges == harnesses[1].merges, (account, signals, ts)


async def compare(
    harnesses: tuple[Harness, Harness], indexes: list[Any], accounts: list[str]
) -> None:
    clusters = set()
    for account in accounts:
        clusters.add(await same(harnesses, indexes, "cluster_of", account))
    for cid in sorted(clusters):
        await same(harnesses, indexes, "explain", cid)
    await same(harnesses, indexes, "stats")
    memory, redis = harnesses
    for account in accounts:
        if account in indexes[0].index._accounts:  # known (not forgotten) to both
            assert await memory.held(indexes[0], account) == await redis.held(indexes[1], account)


@pytest.mark.parametrize(
    ("seed", "retention"),
    [
        pytest.param(1, R, id="retention"),
        pytest.param(2, 0.0, id="out-of-order"),
        pytest.param(3, R, id="retention-2"),
    ],
)
async def test_memory_and_redis_agree_under_a_random_workload_past_the_caps(
    both: tuple[Harness, Harness], seed: int, retention: float
) -> None:
    rng = random.Random(seed)
    cfg = config(retention)
    indexes = [await both[0].make(cfg), await both[1].make(cfg)]
    observer = Observer(both, indexes)
    accounts = [f"acct-{i:02d}" for i in range(30)]
    fresh, ts = [0], T0
    for step in range(1200):
        if retention:
            # In arrival order: both queues of idle accounts then agree on who is oldest.
            ts += rng.choice((0.5, 1.0))
            when = ts
        else:
            # Out of order, with ties: first seen is not arrival order, and values of
            # several observations are first seen at the same time.
            ts += rng.choice((0.0, 0.0, 0.5, 1.0))
            when = ts + rng.choice((-2.0, -0.5, 0.0, 1.5))
        roll = rng.random()
        a, b = rng.sample(accounts, 2)
        if roll < 0.9:
            await observer.observe(a, signals(rng, fresh), when)
        elif roll < 0.93:
            await same(both, indexes, "link", a, b, "ticket", when)
        elif roll < 0.95:
            await same(both, indexes, "unlink", a, b)
        elif roll < 0.96:
            await same(both, indexes, "detach", a)
        else:
            await same(both, indexes, "sweep", when, 3)  # counted by the observer too
        if step % 100 == 99:
            await compare(both, indexes, accounts)
    await compare(both, indexes, accounts)
    stats = await indexes[0].stats()
    # The workload did what it is for: values released at the caps, saturated, linked.
    assert stats.released_values > 100 and stats.saturated_values > 0 and stats.clusters > 0
    assert (observer.forgotten > 10) == bool(retention), observer.forgotten
