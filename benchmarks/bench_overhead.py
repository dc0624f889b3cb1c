"""Per-request overhead by direct ASGI calls (no sockets): bare vs slowapi vs limits vs HydraGuard.

    python benchmarks/bench_overhead.py [--calls 20000] [--reps 7] [--storage redis://127.0.0.1:6379/14]

Each call gets a fresh copy of a pre-built scope for a random one of --accounts ids, a
body from a pool of distinct prompts (``variants.traffic``: benign-looking traffic, so no
limit or detector refuses) and uvicorn-like receive/send callables. Variants run
interleaved, one block of --calls per repetition. Reported per variant: the median µs
per call, the added µs over bare (median over repetitions of variant minus bare in the
same repetition), the best repetition, and the median CPU µs (this process) per call.
Before timing, every limited variant must refuse the 61st request of one account (proof
that it really limits); during timing every response must be 200, and HydraGuard's own
metrics must show only plain allows (no storage fallback), or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import variants
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message

OUT = Path(__file__).resolve().parent / "out"
_DISCONNECT: Message = {"type": "http.disconnect"}
# An event-loop turn every 32 requests, as a server busy with 32 connections gives about:
# deferred work runs in batches, as it would there (one turn per request would run limits'
# O(keys) expiry sweep after every request, which a loaded server never does).
TURN_EVERY = 32


class Exchange:
    """One request's receive/send, as uvicorn behaves: the body once, then (if asked again)
    http.disconnect only after the response is complete."""

    __slots__ = ("body", "complete", "done", "sent", "status")

    def __init__(self, body: bytes = variants.BODY) -> None:
        self.body = body
        self.sent = False
        self.complete = False
        self.status = 0
        self.done: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.complete:
            self.done = asyncio.get_running_loop().create_future()
            await self.done
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
            if self.done is not None and not self.done.done():
                self.done.set_result(None)


def make_scopes(accounts: int, prefix: str) -> list[dict[str, Any]]:
    length = str(len(variants.BODY)).encode()
    return [
        {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": variants.PATH,
            "raw_path": variants.PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", length),
                (b"x-account-id", f"{prefix}-{i}".encode()),
            ],
            "client": ("127.0.0.1", 50000 + i % 10000),  # a loopback peer: no subnet signal
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        for i in range(accounts)
    ]


class Traffic:
    """Pre-built requests: a scope per account, a pool of bodies, a random account per call."""

    def __init__(self, accounts: int, prefix: str, calls: int) -> None:
        self.scopes = make_scopes(accounts, prefix)
        self.bodies, self.order = variants.traffic(20_011, calls, accounts)


async def drive(
    app: ASGIApp, traffic: Traffic, calls: int, start: int
) -> tuple[float, float, Counter[int]]:
    """Wall and CPU seconds for ``calls`` sequential requests, and the statuses they got.

    CPU time (this process only) is the steadier figure on a shared machine when the
    whole request runs in-process (memory storage); with Redis only wall time counts.
    """
    statuses: Counter[int] = Counter()
    scopes, bodies, order = traffic.scopes, traffic.bodies, traffic.order
    n, k = len(order), len(bodies)
    cpu = time.process_time()
    began = time.perf_counter()
    for i in range(start, start + calls):
        exchange = Exchange(bodies[i % k])
        await app(dict(scopes[order[i % n]]), exchange.receive, exchange.send)
        statuses[exchange.status] += 1
        if i % TURN_EVERY == TURN_EVERY - 1:
            await asyncio.sleep(0)
    # Work an app deferred until after its responses (HydraGuard's learning, limits' expiry
    # sweep) runs in the loop turns above and this last one: inside the timed region.
    await asyncio.sleep(0)
    return time.perf_counter() - began, time.process_time() - cpu, statuses


async def proves_limiting(variant: str, storage: str) -> bool:
    """One account sending 61 requests within a minute gets at most 60 through (60/minute);
    HydraGuard's detectors may refuse earlier (one account, one prompt, a tight loop)."""
    app = variants.build(variant, storage)
    scope = make_scopes(1, f"probe-{secrets.token_hex(4)}")[0]
    seen = []
    for _ in range(61):
        exchange = Exchange()
        await app(dict(scope), exchange.receive, exchange.send)
        seen.append(exchange.status)
    return seen.count(200) <= 60 and seen[-1] == 429 and set(seen) == {200, 429}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = (
        f"acct-{secrets.token_hex(4)}"  # fresh ids per run: shared Redis may hold earlier counts
    )
    traffic = Traffic(args.accounts, prefix, args.warmup + args.reps * args.calls)
    for variant in variants.VARIANTS[1:]:
        if not await proves_limiting(variant, args.storage):
            raise SystemExit(
                f"{variant}: did not refuse the 61st request of one account; not benchmarking it"
            )
    registry = CollectorRegistry()
    apps = {
        v: variants.build(v, args.storage, registry if v == "hydraguard" else None)
        for v in variants.VARIANTS
    }
    cursor = 0
    for (
        app
    ) in apps.values():  # warm-up: imports, caches, Redis connections, Starlette's middleware stack
        await drive(app, traffic, args.warmup, cursor)
    cursor += args.warmup
    wall: dict[str, list[float]] = {v: [] for v in apps}
    cpu: dict[str, list[float]] = {v: [] for v in apps}
    statuses: dict[str, Counter[int]] = {v: Counter() for v in apps}
    for rep in range(args.reps):
        order = (
            list(apps)[rep % len(apps) :] + list(apps)[: rep % len(apps)]
        )  # rotate to spread drift
        for variant in order:
            gc.collect()
            seconds, cpu_seconds, got = await drive(apps[variant], traffic, args.calls, cursor)
            wall[variant].append(seconds / args.calls * 1e6)
            cpu[variant].append(cpu_seconds / args.calls * 1e6)
            statuses[variant].update(got)
        cursor += args.calls
    decisions = variants.decision_counts(registry)
    expected_allows = args.warmup + args.reps * args.calls
    bad = {v: {s: n for s, n in c.items() if s != 200} for v, c in statuses.items()}
    results = {
        v: {
            "median_us": statistics.median(wall[v]),
            # Per repetition minus bare's block of the same repetition: steadier than a
            # difference of medians when the machine's speed drifts during the run.
            "added_us": statistics.median(
                x - b for x, b in zip(wall[v], wall["bare"], strict=True)
            ),
            "best_us": min(wall[v]),
            "added_best_us": min(wall[v]) - min(wall["bare"]),
            "cpu_median_us": statistics.median(cpu[v]),
            "runs_us": wall[v],
            "non_200": sum(bad[v].values()),
        }
        for v in apps
    }
    report = {
        "benchmark": "overhead",
        "storage": args.storage,
        "calls": args.calls,
        "reps": args.reps,
        "accounts": args.accounts,
        "python": sys.version.split()[0],
        "nproc": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "hydraguard_decisions": decisions,
        "results": results,
    }
    if any(bad.values()) or decisions != {"allow": expected_allows}:
        print(json.dumps(report, indent=2))
        raise SystemExit(
            f"invalid run: non-200 responses {bad} or HydraGuard decisions {decisions}"
        )
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        f"storage {report['storage']}, {report['calls']} calls x {report['reps']} reps",
        f"{'variant':<12} {'µs/call':>8} {'added':>7} {'best':>7} {'added':>7} "
        f"{'cpu µs':>7} {'non-200':>8}",
    ]
    for variant, r in report["results"].items():
        lines.append(
            f"{variant:<12} {r['median_us']:>8.1f} {r['added_us']:>7.1f} {r['best_us']:>7.1f}"
            f" {r['added_best_us']:>7.1f} {r['cpu_median_us']:>7.1f} {r['non_200']:>8}"
        )
    return "\n".join(lines)


def add_driver_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``drive``'s runs: calls per repetition, repetitions, warm-up, accounts."""
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--accounts", type=int, default=10_000)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(parser)
    parser.add_argument(
        "--storage", default="memory://", help="memory:// or a Redis URL for every variant"
    )
    parser.add_argument(
        "--redis-timeout", type=float, default=1.0,
        help="HydraGuard's storage.timeout on Redis (the policy's 0.05 s falls open on a stall)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.storage.startswith("memory"):
        # As in bench_http.py: a stall of this process or the host (a full garbage collection
        # over 10,000 accounts' state, a VM's stolen time) past 50 ms fired the timeout
        # although Redis answered in microseconds; 1 in 27,000 decisions fell open and
        # invalidated the run. What is measured is the time per call, not that timeout.
        os.environ["BENCH_STORAGE_TIMEOUT"] = str(args.redis_timeout)
    report = asyncio.run(run(args))
    print(table(report))
    OUT.mkdir(exist_ok=True)
    name = "overhead-memory.json" if args.storage.startswith("memory") else "overhead-redis.json"
    (OUT / name).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
