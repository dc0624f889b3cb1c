"""One admission decision on Redis: HydraGuard's script vs ``limits`` one by one vs a bare PING.

    python benchmarks/bench_redis.py [--redis redis://127.0.0.1:6379/14] [--calls 2000] [--reps 5]

All three use redis-py's asyncio client over loopback, sequentially (one decision at a
time), interleaved rep by rep; latencies are per call, median and p99 in µs.

- ``ping``: ``await client.ping()`` on the storage's own client (redis-py's
  ``execute_command``, connection pool and packing), one round trip as an application
  using redis-py pays it.
- ``ping-direct``: PING on the connections the decisions use, written and read without the
  client's layers (``storage/redis_connections.py``): the floor of one round trip on the
  decision's own path.
- ``hydraguard``: ``RedisStorage.acquire`` over the default policy's plan for one
  request: the block flag, 4 account window limits + account concurrency, the same for
  the account's cluster, 2 global window limits, all checked and reserved at once (one
  EVALSHA). Every decision must admit.
- ``limits-2``: two ``SlidingWindowCounterRateLimiter.hit`` calls (the peer's usual setup).
- ``limits-10``: the same 10 window limits as HydraGuard, ``hit`` one by one (``limits``
  has no concurrency limit, and ``hit`` one by one is neither atomic nor all-or-nothing:
  this is a lower bound for what ``limits`` would need to do the same job).

The lease each HydraGuard decision takes is released after the timed call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import variants
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage as LimitsRedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from hydraguard.admit.plan import Plan, Planner
from hydraguard.policy.compiled import WindowLimit
from hydraguard.storage.base import Lease
from hydraguard.storage.redis import RedisStorage

OUT = Path(__file__).resolve().parent / "out"
TOKENS = 14 + 16  # the benchmark body's input estimate + max_tokens, roughly


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"acct-{secrets.token_hex(4)}"  # fresh ids: earlier runs' counts stay out of the way
    planner = Planner(variants.bench_policy())
    plans: list[Plan] = [
        planner.plan(f"{prefix}-{i}", "default", TOKENS) for i in range(args.accounts)
    ]
    windows = [
        (i, limit) for i, limit in enumerate(plans[0].limits) if isinstance(limit, WindowLimit)
    ]
    items: list[tuple[RateLimitItem, str, int]] = [
        (RateLimitItemPerSecond(limit.amount, limit.window), limit.rule, plans[0].checks[i].cost)
        for i, limit in windows
    ]

    storage = RedisStorage(args.redis)
    ping_client = storage.client  # the same client: the comparison is the script, not the pool
    limiter = SlidingWindowCounterRateLimiter(
        LimitsRedisStorage("async+" + args.redis, implementation="redispy")
    )
    counter = 0

    acquire_cpu: list[float] = []

    async def ping() -> None:
        await ping_client.ping()

    async def ping_direct() -> None:
        await storage._direct.send([("PING",)])  # type: ignore[union-attr]

    async def hydraguard() -> None:
        nonlocal counter
        counter += 1
        plan = plans[counter % len(plans)]
        lease_id = f"bench-{counter}"
        cpu_began = time.process_time()
        began = time.perf_counter()
        verdict = await storage.acquire(plan.checks, time.time(), lease_id, 600.0, plan.key_layout)
        timings["hydraguard"].append(time.perf_counter() - began)
        acquire_cpu.append(time.process_time() - cpu_began)
        if not verdict.admitted:
            raise SystemExit(f"HydraGuard refused a benchmark decision: {verdict}")
        storage.settle(
            [], [Lease(plan.checks[i].key, lease_id) for i in plan.lease_checks], time.time()
        )
        await storage.drain()

    def limits_hits(count: int) -> Callable[[], Awaitable[None]]:
        async def hit() -> None:
            nonlocal counter
            counter += 1
            account = f"{prefix}-{counter % args.accounts}"
            for item, rule, cost in items[:count]:
                scope = "global" if rule.startswith("global") else account
                if not await limiter.hit(item, rule, scope, cost=cost):
                    raise SystemExit(f"limits refused a benchmark hit: {rule}")

        return hit

    rows: dict[str, Callable[[], Awaitable[None]]] = {
        "ping": ping,
        "ping-direct": ping_direct,
        "hydraguard": hydraguard,
        "limits-2": limits_hits(2),
        f"limits-{len(items)}": limits_hits(len(items)),
    }
    timings: dict[str, list[float]] = {name: [] for name in rows}
    for call in rows.values():  # warm-up: connections, script load
        for _ in range(args.warmup):
            await call()
    timings = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    acquire_cpu.clear()
    for rep in range(args.reps):
        for name in list(rows)[rep % len(rows) :] + list(rows)[: rep % len(rows)]:
            call = rows[name]
            cpu_began = time.process_time()
            for _ in range(args.calls):
                if name == "hydraguard":
                    await call()  # times only the acquire, not the lease release
                    continue
                began = time.perf_counter()
                await call()
                timings[name].append(time.perf_counter() - began)
            if name == "hydraguard":  # the acquire alone, not the lease release after it
                cpu[name].append(sum(acquire_cpu) / len(acquire_cpu))
                acquire_cpu.clear()
            else:
                cpu[name].append((time.process_time() - cpu_began) / args.calls)
    server_us = await _script_server_time(ping_client, hydraguard, args.calls, storage._acquire.sha)
    concurrent = await _concurrent(storage, plans, args.concurrency, args.calls * args.reps)
    await _cleanup(ping_client, prefix)
    await storage.aclose()

    floor = statistics.median(timings["ping"])
    results = {}
    for name, values in timings.items():
        values.sort()
        median = statistics.median(values)
        results[name] = {
            "median_us": median * 1e6,
            "p99_us": percentile(values, 0.99) * 1e6,
            "x_ping": median / floor,
            # The benchmark process's CPU per call (for HydraGuard, the acquire only).
            "client_cpu_us": statistics.median(cpu[name]) * 1e6,
        }
    results["hydraguard"]["x_ping_direct"] = (
        results["hydraguard"]["median_us"] / results["ping-direct"]["median_us"]
    )
    if server_us is not None:
        results["hydraguard"]["server_us"] = server_us
    for name in results:
        if name.startswith("limits"):
            results[name]["x_hydraguard"] = (
                results[name]["median_us"] / results["hydraguard"]["median_us"]
            )
    return {
        "benchmark": "redis",
        "redis": args.redis,
        "calls": args.calls,
        "reps": args.reps,
        "hydraguard_checks": len(plans[0].checks),
        "hiredis": hiredis_version(),
        "limits_per_decision": len(items),
        "python": sys.version.split()[0],
        "nproc": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "results": results,
        "concurrent": concurrent,
    }


async def _concurrent(
    storage: RedisStorage, plans: list[Plan], workers: int, decisions: int
) -> dict[str, float]:
    """``decisions`` decisions by ``workers`` concurrent tasks (each: acquire, then release
    the lease in the background, as a request does): decisions per second and the client's
    CPU per decision, which is what concurrent requests on one process contend for."""
    todo = iter(range(decisions))

    async def worker() -> None:
        for i in todo:
            plan = plans[i % len(plans)]
            lease_id = f"concurrent-{i}"
            verdict = await storage.acquire(
                plan.checks, time.time(), lease_id, 600.0, plan.key_layout
            )
            if not verdict.admitted:
                raise SystemExit(f"HydraGuard refused a benchmark decision: {verdict}")
            leases = [Lease(plan.checks[c].key, lease_id) for c in plan.lease_checks]
            storage.settle([], leases, time.time())

    cpu_began, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    await storage.drain()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return {
        "workers": workers,
        "decisions": decisions,
        "per_second": decisions / wall,
        "client_cpu_us": cpu / decisions * 1e6,
    }


async def _script_server_time(
    client: aioredis.Redis, decide: Callable[[], Awaitable[None]], calls: int, sha: str
) -> float | None:
    """Median server time of the decision's script ``sha`` (SLOWLOG with a 0 µs threshold,
    over ``calls`` more decisions; their lease releases run another script and are left
    out); None where CONFIG is not allowed (a managed Redis)."""
    try:
        saved = await client.config_get("slowlog-*")
        await client.config_set("slowlog-log-slower-than", 0)
        await client.config_set("slowlog-max-len", max(calls * 3, 128))
    except aioredis.ResponseError:
        return None
    try:
        await client.slowlog_reset()
        for _ in range(calls):
            await decide()
        entries = await client.slowlog_get(calls * 3)
    finally:
        for name, value in saved.items():
            await client.config_set(name, value)
    mine = b"EVALSHA " + sha.encode()
    durations = [e["duration"] for e in entries if (e.get("command") or b"").startswith(mine)]
    return float(statistics.median(durations)) if durations else None


async def _cleanup(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        await client.delete(key)


def hiredis_version() -> str | None:
    try:
        import hiredis
    except ImportError:
        return None
    return str(hiredis.__version__)


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['redis']}, {report['calls']} calls x {report['reps']} reps, sequential",
        f"{'decision':<12} {'median µs':>10} {'p99 µs':>8} {'x PING':>7} {'x HydraGuard':>13}"
        f" {'client CPU µs':>14} {'script µs':>10}",
    ]
    for name, r in report["results"].items():
        vs = f"{r['x_hydraguard']:.2f}" if "x_hydraguard" in r else "-"
        server = f"{r['server_us']:.0f}" if "server_us" in r else "-"
        lines.append(
            f"{name:<12} {r['median_us']:>10.0f} {r['p99_us']:>8.0f} {r['x_ping']:>7.2f} {vs:>13}"
            f" {r['client_cpu_us']:>14.0f} {server:>10}"
        )
    h = report["results"]["hydraguard"]
    lines.append(f"hydraguard: {h['x_ping_direct']:.2f}x ping-direct")
    c = report["concurrent"]
    lines.append(
        f"{c['workers']} concurrent workers, {c['decisions']} decisions (acquire + release): "
        f"{c['per_second']:.0f} decisions/s, client CPU {c['client_cpu_us']:.0f} µs a decision"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="workers of the concurrent pass"
    )
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print(table(report))
    OUT.mkdir(exist_ok=True)
    (OUT / "redis.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
