"""Redis memory per account with the default policy: one decision (and its settlement) for
each of N fresh accounts, then INFO memory's used_memory delta / N.

    python benchmarks/bench_redis_memory.py [--accounts 2000] [--url redis://127.0.0.1:6379/11]

Counters expire on their own (at most 2 days after an account's last request). The
linking index does not: a second figure is its memory per account after each of N
accounts was linked with the default policy's signals (its own card and device, a JA4
shared by many, a /24 shared by a few, no template). None of them is linked to another,
so once they are idle for longer than the policy's ``clustering.retention`` (90 days)
the sweep forgets them: a third figure is what is left per account after sweeping
(batches of 100, as the middleware sends them). The database named by --url is flushed
before and after each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis

from hydraguard import load_policy
from hydraguard.admit.plan import Planner
from hydraguard.cluster.redis_index import RedisClusterIndex
from hydraguard.storage.base import Lease
from hydraguard.storage.redis import RedisStorage


async def measure(url: str, accounts: int) -> tuple[int, float]:
    sync = redis.Redis.from_url(url)
    sync.flushdb()
    before = sync.info("memory")["used_memory"]
    storage = RedisStorage(url)
    planner = Planner(load_policy())
    now = time.time()
    for i in range(accounts):
        plan = planner.plan(f"acct-{i:06d}", "default", 900, f"c-{i:016x}")
        await storage.acquire(plan.checks, now, f"lease-{i}", 600)
        storage.settle(
            [], [Lease(plan.checks[j].key, f"lease-{i}") for j in plan.lease_checks], now
        )
    await storage.drain()
    keys, used = sync.dbsize(), sync.info("memory")["used_memory"] - before
    sync.flushdb()
    sync.close()
    await storage.aclose()
    return keys, used / accounts


async def measure_linking(url: str, accounts: int) -> tuple[float, float, int]:
    """used_memory delta / N after N accounts went through the Redis linking index, the
    same after the idle accounts were swept, and the number of keys left."""
    sync = redis.Redis.from_url(url)
    sync.flushdb()
    before = sync.info("memory")["used_memory"]
    storage = RedisStorage(url)
    config = load_policy().clustering
    index = RedisClusterIndex(storage.client, config)
    now = time.time()
    for i in range(accounts):
        signals = {
            "payment": (f"card-{i:08x}",),
            "device": (f"device-{i:08x}",),
            "ja4": (f"t13d1516h2_8daaf6152771_{i % 40:012x}",),
            "subnet": (f"198.51.{i // 40 % 256}.0/24",),
        }
        await index.observe_sized(f"acct-{i:06d}", signals, now)
    used = sync.info("memory")["used_memory"] - before
    later = now + config.retention + 1
    while await index.sweep(later, 100):
        pass
    await asyncio.sleep(0.5)  # Redis shrinks its emptied key table in its periodic task
    swept, keys = sync.info("memory")["used_memory"] - before, sync.dbsize()
    sync.flushdb()
    sync.close()
    await storage.aclose()
    return used / accounts, swept / accounts, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    keys, per_account = asyncio.run(measure(args.url, args.accounts))
    print(
        f"{args.accounts} accounts: {keys} keys, {per_account:.0f} bytes of Redis memory per account"
    )
    linking, swept, keys = asyncio.run(measure_linking(args.url, args.accounts))
    print(f"linking index: {linking:.0f} bytes of Redis memory per account (no expiry)")
    print(
        f"linking index after the idle accounts were swept (retention): {swept:.0f} bytes"
        f" per account, {keys} keys left"
    )


if __name__ == "__main__":
    main()
