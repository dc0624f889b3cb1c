"""Server instructions per decision script call: a Redis under callgrind, load-immune.

    python benchmarks/count_redis_script_instructions.py [--port 6396] [--small 200] [--large 2200]

Starts its own ``redis-server`` under ``valgrind --tool=callgrind`` (needs both), collecting
only inside ``evalShaCommand`` (the script's whole run: arguments, Lua, the ``MGET`` and
``SET`` calls, the reply), and sends ``RedisStorage.acquire`` decisions over the default
plan (13 checks) of fresh accounts, one at a time, as ``bench_redis.py`` does; the count
at ``--large`` decisions minus the count at ``--small``, divided by the difference. Lua's
garbage collector runs in steps whose size depends on the heap, so fewer than ~2,000
decisions moved the figure by up to 50% between runs; at 200/2,200 runs agreed within 1%.

``PYTHONPATH=<older checkout>/middleware`` counts older code (its script and packing; a
plan without ``key_layout`` is sent without one).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import variants

from hydraguard.admit.plan import Planner
from hydraguard.storage.redis import RedisStorage


async def _decide(port: int, calls: int) -> None:
    storage = RedisStorage(f"redis://127.0.0.1:{port}/14")
    began = time.monotonic()
    while True:  # the server starts slowly under valgrind
        try:
            await storage.ping()
            break
        except Exception:
            if time.monotonic() - began > 60:
                raise
            await asyncio.sleep(0.5)
    planner = Planner(variants.bench_policy())
    prefix = secrets.token_hex(4)
    for i in range(calls):
        plan = planner.plan(f"{prefix}-{i}", "default", 30)
        now = 6_000_000.0 + i / 100
        layout = getattr(plan, "key_layout", None)  # None in older code: not passed
        extra = () if layout is None else (layout,)
        verdict = await storage.acquire(plan.checks, now, f"l{i}", 600.0, *extra)
        if not verdict.admitted:
            raise SystemExit(f"a benchmark decision was refused: {verdict}")
    try:
        await storage.client.shutdown(nosave=True)
    except Exception:  # the connection closes as the server exits
        pass
    await storage._direct.disconnect()  # type: ignore[union-attr]


def count(port: int, calls: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--toggle-collect=evalShaCommand",
                f"--callgrind-out-file={out}",
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(_decide(port, calls))
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait()
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if found is None:
            raise SystemExit(f"no callgrind totals in {out}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6396, help="a free port for the server")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2200)
    args = parser.parse_args()
    small, large = count(args.port, args.small), count(args.port, args.large)
    per_call = (large - small) // (args.large - args.small)
    print(f"acquire script   {per_call:>9,} server instructions/call")


if __name__ == "__main__":
    main()
