"""Where HydraGuard's per-request time goes: cProfile over the overhead benchmark's calls.

    python benchmarks/profile_overhead.py [--calls 20000] [--top 25] [--variant hydraguard]

Prints the functions with the most own time (µs per request, cProfile-inflated: read
them as proportions) and the own time summed per module, HydraGuard's modules first.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import secrets
from collections import defaultdict

import bench_overhead
import variants


async def profile(variant: str, calls: int) -> pstats.Stats:
    app = variants.build(variant)
    traffic = bench_overhead.Traffic(10_000, f"prof-{secrets.token_hex(4)}", 2_000 + calls)
    await bench_overhead.drive(app, traffic, 2_000, 0)
    profiler = cProfile.Profile()
    profiler.enable()
    _, _, statuses = await bench_overhead.drive(app, traffic, calls, 2_000)
    profiler.disable()
    if set(statuses) != {200}:
        raise SystemExit(f"non-200 responses while profiling: {dict(statuses)}")
    return pstats.Stats(profiler)


def _where(filename: str) -> str:
    """Short names: hydraguard/..., starlette/..., json/... instead of full paths."""
    if "/hydraguard/" in filename:
        return "hydraguard/" + filename.split("/hydraguard/", 1)[1]
    return re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", filename)


def report(stats: pstats.Stats, calls: int, top: int) -> str:
    raw = stats.stats  # type: ignore[attr-defined]  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}
    rows = sorted(((tt, cum, nc, key) for key, (_, nc, tt, cum, _) in raw.items()), reverse=True)
    total = sum(tt for tt, *_ in rows)
    lines = [f"total profiled time {total / calls * 1e6:.1f} µs/request (cProfile-inflated)", ""]
    lines.append(f"{'own µs/req':>10} {'cum µs/req':>10} {'calls/req':>9}  function")
    for tt, cum, nc, (file, line, func) in rows[:top]:
        lines.append(
            f"{tt / calls * 1e6:>10.2f} {cum / calls * 1e6:>10.2f} {nc / calls:>9.1f}  "
            f"{_where(file)}:{line}({func})"
        )
    modules: dict[str, float] = defaultdict(float)
    for tt, _, _, (file, _, _) in rows:
        modules[_where(file).split(":")[0]] += tt
    lines += ["", f"{'own µs/req':>10}  module"]
    ordered = sorted(modules.items(), key=lambda kv: (not kv[0].startswith("hydraguard/"), -kv[1]))
    lines += [f"{tt / calls * 1e6:>10.2f}  {name}" for name, tt in ordered[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--variant", default="hydraguard", choices=variants.VARIANTS)
    args = parser.parse_args()
    print(report(asyncio.run(profile(args.variant, args.calls)), args.calls, args.top))


if __name__ == "__main__":
    main()
