"""Exact across processes: several worker processes share one real Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Iterator

import pytest
import redis

from hydraguard.storage.base import Charge, Check, Lease
from hydraguard.storage.redis import RedisStorage

pytestmark = pytest.mark.redis

URL = os.environ.get(
    "HYDRAGUARD_TEST_REDIS",
    f"redis://127.0.0.1:{os.environ.get('HYDRAGUARD_TEST_REDIS_PORT', '6379')}/13",
)
PROCESSES = 4
PER_PROCESS = 50
LIMIT = 37


@pytest.fixture(autouse=True)
def clean_db() -> Iterator[None]:
    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def checks(tokens: int) -> list[Check]:
    return [
        Check("hg:{a:shared}:r60", LIMIT, 60, 1),
        Check("hg:{a:shared}:t60", 10_000_000, 60, tokens),
        Check("hg:{a:shared}:c", 1000, 0, 1),
        Check("hg:{g}:r60", 1_000_000, 60, 1),
    ]


def worker(start_at: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> tuple[int, int]:
        storage = RedisStorage(URL)
        # Everyone fires at the same instant, so the processes really race.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        now = time.time()
        verdicts = await asyncio.gather(
            *(
                storage.acquire(checks(100), now, f"{os.getpid()}-{i}", 60)
                for i in range(PER_PROCESS)
            )
        )
        admitted = [(i, v) for i, v in enumerate(verdicts) if v.admitted]
        # Each admitted request really used 30 tokens: settle the reservation of 100 down.
        for i, verdict in admitted:
            storage.settle(
                [Charge("hg:{a:shared}:t60", 60, verdict.window_ids[1], 30 - 100)],
                [Lease("hg:{a:shared}:c", f"{os.getpid()}-{i}")],
                now,
            )
        await storage.aclose()
        return len(admitted), len(verdicts)

    results.put(asyncio.run(run()))


def test_exactly_the_limit_is_admitted_across_processes_and_tokens_reconcile() -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0
    processes = [context.Process(target=worker, args=(start_at, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(total for _, total in outcomes) == PROCESSES * PER_PROCESS
    assert sum(admitted for admitted, _ in outcomes) == LIMIT

    async def usage() -> list[float]:
        storage = RedisStorage(URL)
        try:
            return await storage.usage(checks(0), time.time())
        finally:
            await storage.aclose()

    requests, tokens, slots, _ = asyncio.run(usage())
    assert requests == pytest.approx(LIMIT, abs=1)  # may have slid a little into the next window
    assert tokens == pytest.approx(LIMIT * 30, rel=0.05)  # reconciled to the real usage
    assert slots == 0  # every lease released


def hold_and_die(url: str) -> None:
    async def run() -> None:
        storage = RedisStorage(url)
        await storage.acquire([Check("hg:{a:dead}:c", 2, 0, 1)], time.time(), "dying-1", 1.0)
        await storage.acquire([Check("hg:{a:dead}:c", 2, 0, 1)], time.time(), "dying-2", 1.0)

    asyncio.run(run())
    os._exit(0)  # die without settling: the leases are left behind


def test_slots_of_a_dead_process_are_reclaimed_by_lease_timeout() -> None:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=hold_and_die, args=(URL,))
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0

    async def attempt() -> bool:
        storage = RedisStorage(URL)
        try:
            verdict = await storage.acquire(
                [Check("hg:{a:dead}:c", 2, 0, 1)], time.time(), "new", 60
            )
            return verdict.admitted
        finally:
            await storage.aclose()

    assert asyncio.run(attempt()) is False  # both slots still held by the dead process
    time.sleep(1.2)
    assert asyncio.run(attempt()) is True  # lease timeout reclaimed them
