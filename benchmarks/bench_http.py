"""HTTP throughput on uvicorn (loopback) of bare vs slowapi vs limits vs HydraGuard.

    python benchmarks/bench_http.py [--duration 10] [--rounds 3] [--connections 32]
                                    [--redis redis://127.0.0.1:6379/14] [--floor]
                                    [--stack h11|uvloop] [--variants bare,hydraguard]

Each variant runs in its own uvicorn process (one worker) on a free port; the load
comes from ``wrk`` (Debian package ``wrk``) with ``wrk_post.lua`` POSTing a small
chat-completions body under rotating x-account-id headers, or, without wrk, from a
Python httpx generator in a separate process. Variants are interleaved round by round;
the figure is the median req/s, and the ratio is to the bare app of the same run.
With ``--redis`` two last rows run HydraGuard on that Redis with uvicorn ``--workers 1`` and ``2``.
A run with any non-2xx response, or where HydraGuard's metrics show anything but plain
allows (e.g. a storage fallback), fails.

``--stack`` picks uvicorn's event loop and HTTP parser for every variant: ``h11`` (the
default: asyncio's loop and the pure-Python h11, the setup of issue 2's reference
figures) or ``uvloop`` (uvloop and httptools, what ``hydraguard serve`` runs on, as
uvicorn picks them whenever they are installed). Results go to ``out/http.json``, or
``out/http-uvloop.json`` for the second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import variants
from uvicorn.supervisors import Multiprocess

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
POOL = 100_000  # requests the generator cycles through: ~10 per account, each prompt distinct


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# uvicorn's (loop, http) settings per --stack
STACKS = {"h11": ("asyncio", "h11"), "uvloop": ("uvloop", "httptools")}


def start_server(
    variant: str,
    port: int,
    storage: str,
    workers: int,
    stats_dir: str,
    timeout: float | None,
    stack: str = "h11",
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        variant,
        str(port),
        str(workers),
        stack,
    ]
    env = {**os.environ, "BENCH_STORAGE": storage, "BENCH_STATS_DIR": stats_dir}
    if timeout is not None:
        env["BENCH_STORAGE_TIMEOUT"] = str(timeout)
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 404:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"{variant}: uvicorn did not start on port {port}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)  # graceful: lifespan shutdown writes the decision counts
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def write_pool(path: Path, accounts: int) -> None:
    """The requests the load generators cycle through: ``account-index<TAB>body`` lines."""
    bodies, order = variants.traffic(POOL, POOL, accounts)
    lines = (f"{account}\t{body.decode()}\n" for account, body in zip(order, bodies, strict=True))
    path.write_text("".join(lines), encoding="utf-8")


def load(url: str, duration: float, connections: int, pool: Path) -> dict[str, Any]:
    prefix = f"acct-{secrets.token_hex(4)}"  # fresh ids: a shared Redis may hold earlier counts
    if shutil.which("wrk"):
        env = {**os.environ, "BENCH_POOL": str(pool), "BENCH_ACCOUNT_PREFIX": prefix}
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "--timeout", "5s",
            "-s", str(HERE / "wrk_post.lua"), url,
        ]  # fmt: skip
    else:
        env = dict(os.environ)
        command = [
            sys.executable, str(Path(__file__).resolve()), "--generator",
            url, str(duration), str(connections), str(pool), prefix,
        ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"load generator failed ({done.returncode}): {done.stderr or done.stdout}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["generator"] = "wrk" if command[0] == "wrk" else "httpx"
    return result


def measure(variant: str, args: argparse.Namespace, storage: str, workers: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as stats_dir:
        timeout = None if storage.startswith("memory") else args.redis_timeout
        server = start_server(variant, port, storage, workers, stats_dir, timeout, args.stack)
        url = f"http://127.0.0.1:{port}{variants.PATH}"
        try:
            warm = load(url, args.warmup, args.connections, args.pool)
            result = load(url, args.duration, args.connections, args.pool)
        finally:
            stop_server(server)
        decisions: dict[str, float] = {}
        for file in Path(stats_dir).glob("*.json"):
            for name, count in json.loads(file.read_text(encoding="utf-8")).items():
                decisions[name] = decisions.get(name, 0.0) + count
    failures = sum(
        result[k] + warm[k] for k in ("non_2xx", "connect_errors", "read_errors", "write_errors")
    )
    sent = warm["requests"] + result["requests"]
    # wrk counts completed responses; the server may have allowed a few more still in flight.
    fallbacks = sum(n for name, n in decisions.items() if name != "allow")
    result["problems"] = []
    if failures:
        result["problems"].append(f"{failures} failed or non-2xx responses")
    if variant == "hydraguard" and (fallbacks or decisions.get("allow", 0) < sent):
        result["problems"].append(f"HydraGuard decisions {decisions} for {sent} responses")
    result["hydraguard_decisions"] = decisions
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [(v, "memory://", 1) for v in args.variants]
    if args.floor:
        rows.append(("floor", "memory://", 1))
    if args.redis:
        rows += [("hydraguard", args.redis, 1), ("hydraguard", args.redis, 2)]
    runs: dict[str, list[dict[str, Any]]] = {}
    OUT.mkdir(exist_ok=True)
    args.pool = OUT / "http-pool.tsv"
    write_pool(args.pool, args.accounts)
    for _ in range(args.rounds):
        for variant, storage, workers in rows:
            label = variant if storage.startswith("memory") else f"hydraguard-redis-{workers}w"
            result = measure(variant, args, storage, workers)
            runs.setdefault(label, []).append(result)
            print(
                f"  {label:<22} {result['rps']:>8.0f} req/s {' '.join(result['problems'])}",
                flush=True,
            )
    bare = statistics.median(r["rps"] for r in runs["bare"])
    results = {
        label: {
            "rps": statistics.median(r["rps"] for r in found),
            "ratio": statistics.median(r["rps"] for r in found) / bare,
            "latency_p50_ms": statistics.median(r["latency_p50_us"] for r in found) / 1000,
            "latency_p99_ms": statistics.median(r["latency_p99_us"] for r in found) / 1000,
            "runs_rps": [r["rps"] for r in found],
            "problems": [p for r in found for p in r["problems"]],
        }
        for label, found in runs.items()
    }
    return {
        "benchmark": "http",
        "stack": args.stack,
        "generator": runs["bare"][0]["generator"],
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
        "accounts": args.accounts,
        "python": sys.version.split()[0],
        "nproc": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['generator']}, {report['connections']} connections, "
        f"{report['duration_s']} s x {report['rounds']}",
        f"{'variant':<22} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}  problems",
    ]
    for label, r in report["results"].items():
        lines.append(
            f"{label:<22} {r['rps']:>8.0f} {r['ratio']:>6.2f} "
            f"{r['latency_p50_ms']:>7.2f} {r['latency_p99_ms']:>7.2f}"
            f"  {'; '.join(r['problems']) or '-'}"
        )
    return "\n".join(lines)


def serve(variant: str, port: int, workers: int, stack: str) -> None:
    """``uvicorn variants:<variant>_app --factory --workers N --no-access-log``, own socket.

    uvicorn's own ``bind_socket`` leaves ``proto=0``, so asyncio never sets TCP_NODELAY on
    the connections it accepts and, with ``--workers`` > 1, every keep-alive response waits
    ~40 ms for a delayed ACK (uvicorn issue #3149); binding with IPPROTO_TCP avoids that.
    """
    # The floor (bench_floor.py) is not a variant of hydraguard's peers: its own module.
    module = "bench_floor" if variant == "floor" else "variants"
    loop, http = STACKS[stack]
    config = uvicorn.Config(
        f"{module}:{variant}_app", factory=True, host="127.0.0.1", port=port, workers=workers,
        access_log=False, log_level="warning", loop=loop, http=http,
    )  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.set_inheritable(True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how bench_http stops the server
        if workers == 1:
            uvicorn.Server(config).run(sockets=[sock])
        else:
            Multiprocess(config, sockets=[sock]).run()


async def _generate(
    url: str, duration: float, connections: int, requests: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """Fallback load generator (no wrk): ``connections`` keep-alive workers POSTing in a loop."""
    latencies: list[float] = []
    counts = {"requests": 0, "non_2xx": 0, "read_errors": 0}
    stop = time.perf_counter() + duration

    async def worker(client: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            i += 1
            account, body = requests[i % len(requests)]
            began = time.perf_counter()
            try:
                response = await client.post(
                    url,
                    content=body,
                    headers={"content-type": "application/json", "x-account-id": account},
                )
            except httpx.TransportError:
                counts["read_errors"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            counts["requests"] += 1
            counts["non_2xx"] += not 200 <= response.status_code < 300

    began = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
        await asyncio.gather(*(worker(client, n * 997) for n in range(connections)))
    latencies.sort()
    pick = (
        (lambda q: latencies[int(q * (len(latencies) - 1))] * 1e6) if latencies else (lambda q: 0.0)
    )
    return {
        **counts, "duration_us": (time.perf_counter() - began) * 1e6,
        "connect_errors": 0, "write_errors": 0,
        "timeouts": 0, "latency_p50_us": pick(0.5), "latency_p99_us": pick(0.99),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return None
    if argv[:1] == ["--generator"]:
        url, duration, connections, pool, prefix = argv[1:6]
        lines = Path(pool).read_text(encoding="utf-8").splitlines()
        pairs = (line.split("\t", 1) for line in lines)
        requests = [(f"{prefix}-{account}", body.encode()) for account, body in pairs]
        result = asyncio.run(_generate(url, float(duration), int(connections), requests))
        print(json.dumps(result))
        return None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of load per variant and round"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of load before each measurement"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument(
        "--stack",
        choices=sorted(STACKS),
        default="h11",
        help="uvicorn's loop and HTTP parser: asyncio + h11, or uvloop + httptools",
    )
    parser.add_argument(
        "--variants",
        type=lambda text: [v for v in text.split(",") if v],
        default=list(variants.VARIANTS),
        help="comma-separated variants to run (bare is always needed for the ratios)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench_floor.py's Floor: the least middleware doing issue 2's work",
    )
    parser.add_argument(
        "--redis", help="also run HydraGuard on this Redis URL with 1 and 2 uvicorn workers"
    )
    parser.add_argument(
        "--redis-timeout", type=float, default=1.0,
        help="policy storage.timeout (s) for the Redis rows; the shipped 0.05 s also times out on "
        "event-loop lag "
        "when the server is saturated, and those requests are admitted without Redis (fail open)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if "bare" not in args.variants:
        parser.error("--variants must include bare: ratios are to the bare app of the same run")
    report = run(args)
    print(table(report))
    OUT.mkdir(exist_ok=True)
    name = "http.json" if args.stack == "h11" else f"http-{args.stack}.json"
    (OUT / name).write_text(json.dumps(report, indent=2), encoding="utf-8")
    problems = {label: r["problems"] for label, r in report["results"].items() if r["problems"]}
    if problems:
        raise SystemExit(
            f"invalid rows (a benchmark of refusals or fallbacks is worthless): {problems}"
        )
    return report


if __name__ == "__main__":
    main()
