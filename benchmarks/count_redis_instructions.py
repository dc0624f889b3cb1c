"""Client instructions per call on Redis under callgrind: what a code change saves there.

    python benchmarks/count_redis_instructions.py [--redis redis://127.0.0.1:6379/14] [--small 200] [--large 1200]

The client side of ``bench_redis.py``'s rows, counted as ``count_instructions.py`` counts
a request (collection only inside ``exec``, the count at ``--large`` calls minus the count
at ``--small``, divided by the difference), so the machine's load does not move it. Only
user-space instructions: the kernel's share of a round trip (send, ``epoll``, recv) is not
in them. Rows:

- ``ping``: ``client.ping()``, redis-py's ``execute_command`` path;
- ``ping-direct``: a PING on the connections the storage's script calls use;
- ``decision``: ``RedisStorage.acquire`` over the default plan of a fresh account (13 checks);
- ``decision+settle``: the same, then the lease release a request makes, and ``drain``;
- ``python``: the decision with the round trip replaced by a canned answer (HydraGuard's
  own Python around the call: splitting keys, packing, the ``Verdict``).

``PYTHONPATH=<older checkout>/middleware`` counts older code (``ping-direct`` needs this one).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = ("ping", "ping-direct", "decision", "decision+settle", "python")
ACCOUNTS = 3000
WARM_UP = 200


def child(row: str, calls: int, redis: str) -> None:
    sys.path.insert(0, str(HERE))
    import variants
    from bench_redis import _cleanup

    from hydraguard.admit.plan import Planner
    from hydraguard.storage.base import Lease
    from hydraguard.storage.redis import RedisStorage, _doubles

    prefix = f"instr-{secrets.token_hex(4)}"  # fresh accounts, whatever earlier runs left
    planner = Planner(variants.bench_policy())
    plans = [planner.plan(f"{prefix}-{i}", "default", 30) for i in range(ACCOUNTS)]
    storage = RedisStorage(redis)
    if row == "python":
        n = len(plans[0].checks)
        answer = _doubles(1 + 2 * n).pack(1, *[1.0] * n, *[0.0] * n)

        async def canned(*_: object) -> bytes:
            return answer

        storage._decide = canned  # type: ignore[method-assign]

    async def run(start: int, count: int) -> None:
        for i in range(start, start + count):
            if row == "ping":
                await storage.client.ping()
            elif row == "ping-direct":
                await storage._direct.send([("PING",)])  # type: ignore[union-attr]
            else:
                plan, now = plans[i % ACCOUNTS], 6_000_000.0 + i / 1000
                layout = getattr(plan, "key_layout", None)  # None in older code: not passed
                extra = () if layout is None else (layout,)
                await storage.acquire(plan.checks, now, f"l{i}", 600.0, *extra)
                if row == "decision+settle":
                    leases = [Lease(plan.checks[c].key, f"l{i}") for c in plan.lease_checks]
                    storage.settle([], leases, now)
                    await storage.drain()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(run(0, WARM_UP))
    # Collected: callgrind counts only inside exec (--toggle-collect), i.e. these calls.
    exec("loop.run_until_complete(run(WARM_UP, calls))")
    loop.run_until_complete(_cleanup(storage.client, prefix))
    loop.run_until_complete(storage.aclose())


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    from count_instructions import collected

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    args = parser.parse_args()

    def count(row: str, calls: int) -> int:
        return collected([__file__, "--child", row, str(calls), args.redis], row)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for row in args.rows.split(","):
            small, large = pool.map(count, [row, row], [args.small, args.large])
            print(f"{row:16s} {(large - small) // (args.large - args.small):>9,} instructions/call")


if __name__ == "__main__":
    main()
