"""Redis memory per account with the default policy: one decision (and its settlement) for
each of N fresh accounts, then INFO memory's used_memory delta / N.

    python benchmarks/bench_redis_memory.py [--accounts 2000] [--url redis://127.0.0.1:6379/11]

The database named by --url is flushed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis

from hydraguard import load_policy
from hydraguard.admit.plan import Planner
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    keys, per_account = asyncio.run(measure(args.url, args.accounts))
    print(
        f"{args.accounts} accounts: {keys} keys, {per_account:.0f} bytes of Redis memory per account"
    )


if __name__ == "__main__":
    main()
