"""Run every benchmark (each in its own process) and rewrite the results in benchmarks/README.md.

    python benchmarks/run_all.py [--redis redis://127.0.0.1:6379/14] [--quick] [--render-only]

Results go to benchmarks/out/*.json; the README section between the ``results:start``
and ``results:end`` markers is regenerated from them (nothing else in the README changes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def limits_per_request() -> dict[str, str]:
    """What each variant checks per request; HydraGuard's count comes from its plan."""
    sys.path.insert(0, str(HERE))
    import variants

    from hydraguard.admit.plan import Planner

    checks = Planner(variants.bench_policy()).plan("bench", "default", 1).checks
    windows = sum(1 for c in checks if c.window > 0)
    concurrency = sum(1 for c in checks if c.window == 0)
    return {
        "bare": "none",
        "slowapi": "1",
        "limits": "2",
        "hydraguard": f"{windows} windows + {concurrency} concurrency",
    }


def commands(redis: str, quick: bool) -> list[list[str]]:
    short_overhead = ["--calls", "5000", "--reps", "3"] if quick else []
    short_http = ["--duration", "3", "--rounds", "1"] if quick else []
    short_redis = ["--calls", "500", "--reps", "3"] if quick else []
    py = sys.executable
    return [
        [py, str(HERE / "bench_overhead.py"), *short_overhead],
        [py, str(HERE / "bench_floor.py"), *short_overhead],
        # Every Redis call is a round trip: fewer calls keep this step near a minute.
        [py, str(HERE / "bench_overhead.py"), "--storage", redis, "--calls", "5000", "--reps", "5"],
        [py, str(HERE / "bench_redis.py"), "--redis", redis, *short_redis],
        [py, str(HERE / "bench_http.py"), "--redis", redis, "--floor", *short_http],
        [py, str(HERE / "bench_http.py"), "--stack", "uvloop", "--floor", *short_http],
    ]


def _http_table(http: dict[str, Any], title: str) -> list[str]:
    """One bench_http.py run as a table, with the floor's share when it ran."""
    stack = http.get("stack", "h11")
    server = "asyncio's loop and h11" if stack == "h11" else "uvloop and httptools"
    lines = [
        title,
        "",
        f"{http['generator']}, 1 thread, {http['connections']} connections, "
        f"{http['duration_s']} s per run, "
        f"median of {http['rounds']} interleaved rounds; uvicorn on {server}; "
        "every response 2xx.",
        "",
        "| variant | req/s | ratio to bare | p50 latency ms | p99 latency ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in http["results"].items():
        if r.get("problems"):
            label = f"{label} (INVALID: {'; '.join(r['problems'])})"
        lines.append(
            f"| {label} | {r['rps']:.0f} | {r['ratio']:.2f} "
            f"| {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} |"
        )
    lines.append("")
    floor_http = http["results"].get("floor")
    if floor_http is not None:
        lines += [
            f"`floor` is `bench_floor.py`'s `Floor` under the same server: the least Python "
            f"middleware doing issue 2's per-request work kept {floor_http['ratio']:.0%} of "
            "the bare app's throughput in this run.",
            "",
        ]
    return lines


def machine() -> dict[str, Any]:
    versions = {
        name: metadata.version(name)
        for name in ("starlette", "uvicorn", "slowapi", "limits", "redis")
    }
    try:
        server = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()
        versions["redis-server"] = next(
            (w.split("=")[1] for w in server if w.startswith("v=")), "?"
        )
    except OSError:
        versions["redis-server"] = "?"
    wrk = subprocess.run(
        ["sh", "-c", "wrk --version 2>&1 | head -1"], capture_output=True, text=True
    ).stdout
    return {
        "date": time.strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "wrk": wrk.split(" [")[0].strip() or "not installed",
    }


def _read(name: str) -> dict[str, Any] | None:
    path = OUT / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def render(command: str) -> str:
    info = _read("machine.json") or {}
    lines = [
        f"Measured {info.get('date', '?')} on {info.get('nproc', '?')} CPUs, "
        f"Python {info.get('python', '?')}, {info.get('platform', '?')}; "
        f"load average before the run {info.get('loadavg_before', '?')}.",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        + f", {info.get('wrk', 'wrk ?')}.",
        "",
        "Reproduce with:",
        "",
        "    " + command,
        "",
    ]
    targets: list[tuple[str, str, bool | None]] = []
    checks = limits_per_request()
    for name, title in (("overhead-memory.json", "memory://"), ("overhead-redis.json", "Redis")):
        report = _read(name)
        if report is None:
            continue
        lines += [
            f"### Per-request overhead, direct ASGI calls, storage {title}",
            "",
            f"{report['calls']} sequential calls x {report['reps']} repetitions per variant, "
            "interleaved; "
            f"{report['accounts']} random accounts, distinct prompts; every response 200.",
            "",
            "| variant | limits per request | µs per call (median) | added µs over bare "
            "| best rep µs | added µs, best reps |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for variant, r in report["results"].items():
            lines.append(
                f"| {variant} | {checks[variant]} | {r['median_us']:.1f} | {r['added_us']:.1f} "
                f"| {r['best_us']:.1f} | {r['added_best_us']:.1f} |"
            )
        lines.append("")
        if title == "memory://":
            added = report["results"]["hydraguard"]["added_us"]
            targets.append(
                ("HydraGuard adds ≤ 25 µs per request (memory)", f"{added:.1f} µs", added <= 25)
            )
    floor = _read("floor.json")
    if floor is not None:
        lines += [
            "### The floor: the least Python middleware doing issue 2's per-request work",
            "",
            f"`bench_floor.py` ({floor['calls']} calls x {floor['reps']} repetitions, "
            "interleaved, the same driver and traffic): `Floor` parses the body, checks and "
            "charges four window limits and a concurrency slot in a dict, counts a metric, "
            "adds two RateLimit headers and reconciles the tokens from the response; nothing "
            "else HydraGuard does.",
            "",
            "| variant | µs per call (median) | added µs over bare |",
            "|---|---:|---:|",
        ]
        for variant, r in floor["results"].items():
            lines.append(f"| {variant} | {r['median_us']:.1f} | {r['added_us']:.1f} |")
        lines.append("")
    http = _read("http.json")
    if http is not None:
        lines += _http_table(
            http, "### HTTP throughput, uvicorn (one worker unless stated), loopback"
        )
        ratio = http["results"]["hydraguard"]["ratio"]
        targets.append(
            ("HydraGuard keeps ≥ 90% of bare HTTP throughput", f"{ratio:.0%}", ratio >= 0.9)
        )
    fast = _read("http-uvloop.json")
    if fast is not None:
        lines += _http_table(
            fast,
            "### HTTP throughput on uvloop and httptools (what `hydraguard serve` runs on)",
        )
    redis = _read("redis.json")
    if redis is not None:
        lines += [
            "### One admission decision on Redis, sequential, loopback",
            "",
            f"{redis['calls']} calls x {redis['reps']} repetitions per row, interleaved. "
            f"HydraGuard checks and reserves {redis['hydraguard_checks']} limits in one call; "
            "`limits-N` hits N window limits one by one. Client CPU: the benchmark process's "
            "CPU time per call (HydraGuard: the acquire alone). Script: the decision script's "
            "own time in the server (median `SLOWLOG` duration over one more pass).",
            "",
            "| decision | median µs | p99 µs | x PING | x HydraGuard | client CPU µs "
            "| script µs (server) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in redis["results"].items():
            vs = f"{r['x_hydraguard']:.2f}" if "x_hydraguard" in r else ""
            cpu = f"{r['client_cpu_us']:.0f}" if "client_cpu_us" in r else ""
            server = f"{r['server_us']:.0f}" if "server_us" in r else ""
            lines.append(
                f"| {name} | {r['median_us']:.0f} | {r['p99_us']:.0f} | {r['x_ping']:.2f} | {vs} "
                f"| {cpu} | {server} |"
            )
        lines.append("")
        c = redis.get("concurrent")
        if c is not None:
            lines += [
                f"Concurrently, {c['workers']} workers on one client (each decision followed by "
                f"its lease release, as a request does): {c['per_second']:,.0f} decisions/s, "
                f"{c['client_cpu_us']:.0f} µs of client CPU a decision.",
                "",
            ]
        x_ping = redis["results"]["hydraguard"]["x_ping"]
        peer = f"limits-{redis['limits_per_decision']}"
        x_peer = redis["results"][peer]["x_hydraguard"]
        targets.append(
            (
                "Redis decision within 1.5x of PING (redis-py client)",
                f"{x_ping:.2f}x",
                x_ping <= 1.5,
            )
        )
        x_direct = redis["results"]["hydraguard"].get("x_ping_direct")
        if x_direct is not None:
            targets.append(
                (
                    "... within 1.5x of PING on the decision's own connections",
                    f"{x_direct:.2f}x",
                    x_direct <= 1.5,
                )
            )
        targets.append(
            (f"Redis decision ≥ 2.5x faster than `{peer}`", f"{x_peer:.2f}x", x_peer >= 2.5)
        )
    if targets:
        lines += [
            "### Targets (issues 2 and 4)",
            "",
            "| target | measured | met |",
            "|---|---:|---|",
        ]
        lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    return "\n".join(lines)


def rewrite_readme(section: str) -> None:
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{section}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs, to check that everything works (the README is left as it was)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the README from benchmarks/out/"
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/run_all.py" + (
        f" --redis {args.redis}" if args.redis != parser.get_default("redis") else ""
    )
    failed = []
    if not args.render_only:
        OUT.mkdir(exist_ok=True)
        for stale in OUT.glob("*.json"):  # a failed benchmark must not leave older figures behind
            stale.unlink()
        (OUT / "machine.json").write_text(json.dumps(machine(), indent=2), encoding="utf-8")
        for cmd in commands(args.redis, args.quick):
            print(
                "$", " ".join(Path(c).name if c.endswith(".py") else c for c in cmd[1:]), flush=True
            )
            if subprocess.run(cmd).returncode:
                failed.append(Path(cmd[1]).name)
    if args.quick:
        # Short runs check that everything works; their figures are not results to publish.
        print("--quick: benchmarks/README.md left as it was", file=sys.stderr)
    else:
        rewrite_readme(render(command))
    if failed:
        print(
            f"failed: {', '.join(failed)} (README shows the last good results of those)",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
