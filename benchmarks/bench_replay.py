"""Replay throughput: logged requests per second through `hydraguard replay` on one core.

    python benchmarks/bench_replay.py [--hours 4] [--reps 3] [--profile 25]

Generates traffic with the simulate package (default scenario, first --hours hours,
fixed seed), then times, in one process on one core:

- `read`: reading and checking the log alone (`replay.reader`);
- `replay machinery`: the whole replay loop (read, route, parse the body, write
  decision lines, tally the report) around a stand-in Guard that admits everything,
  i.e. what replay itself costs;
- `replay, default policy`: the real thing, the shipped default policy with every
  detector on, decisions written, report tallied;
- the split of the real run between `Guard.decide` and `Guard.complete`.

Median of --reps runs each. Times are this process's CPU time, not wall time: replay
runs on one core, and on a machine shared with other work the wall clock also counts the
time other processes had the core, which made runs differ by 2x. --profile N prints the N
functions with the most own time in one real run (cProfile). Results also go to
benchmarks/out/replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

from hydraguard.policy.loader import load_policy
from hydraguard.replay.engine import Engine
from hydraguard.replay.reader import read_traffic
from hydraguard.replay.run import replay_file
from hydraguard.simulate.generate import write
from hydraguard.simulate.scenario import Scenario

HERE = Path(__file__).resolve().parent
clock = time.process_time  # CPU time of this process: see the docstring
DEFAULT_POLICY = HERE.parent / "policies" / "default.yaml"


class AdmitAll:
    """A stand-in Guard: admits everything, so the timing is replay's own."""

    def __init__(self, identifier: Any) -> None:
        self.identifier = identifier
        self.decision = SimpleNamespace(
            admitted=True, output_cap=None, input_estimate=0, cluster=None, actions=(),
            rule=None, risk=0.0, shadow_denied=False,
        )  # fmt: skip

    async def decide(self, identity: Any, facts: Any, now: float) -> Any:
        return self.decision

    def complete(self, *args: Any) -> None:
        pass


class Timed:
    """Wraps the real Guard to split the time between decide and complete."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard
        self.identifier = guard.identifier
        self.decide_s = self.complete_s = 0.0

    async def decide(self, identity: Any, facts: Any, now: float) -> Any:
        started = clock()
        try:
            return await self.guard.decide(identity, facts, now)
        finally:
            self.decide_s += clock() - started

    def complete(self, *args: Any) -> None:
        started = clock()
        self.guard.complete(*args)
        self.complete_s += clock() - started


async def loop(traffic: Path, policy: Any, wrap: Callable[[Any], Any]) -> tuple[int, float, Any]:
    """The full replay loop (decision lines written to memory) around a wrapped Guard."""
    engine = Engine(policy)
    engine.guard = wrap(engine.guard)
    started = clock()
    tally = await replay_file(traffic, policy, decisions=io.BytesIO(), engine=engine)
    return tally.lines, clock() - started, engine.guard


def read_only(traffic: Path) -> tuple[int, float]:
    started = clock()
    n = sum(1 for _ in read_traffic(traffic))
    return n, clock() - started


async def full(traffic: Path, policy: Any, decisions: BinaryIO) -> tuple[int, float]:
    started = clock()
    tally = await replay_file(traffic, policy, decisions=decisions)
    return tally.lines, clock() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=4.0, help="hours of the default scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the top N functions"
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "replay.json")
    args = parser.parse_args(argv)
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory() as tmp:
        traffic, decisions = Path(tmp) / "traffic.jsonl", Path(tmp) / "decisions.jsonl"
        stats = write(Scenario(seed=args.seed, hours=args.hours), traffic)
        print(f"traffic: {stats.summary()}", file=sys.stderr)
        rates: dict[str, list[float]] = {
            "read": [],
            "replay machinery": [],
            "replay, default policy": [],
        }
        split: list[tuple[float, float, float]] = []
        for _ in range(args.reps):
            n, seconds = read_only(traffic)
            rates["read"].append(n / seconds)
            n, seconds, _guard = asyncio.run(
                loop(traffic, policy, lambda g: AdmitAll(g.identifier))
            )
            rates["replay machinery"].append(n / seconds)
            with open(decisions, "wb", buffering=1 << 20) as out:
                n, seconds = asyncio.run(full(traffic, policy, out))
            rates["replay, default policy"].append(n / seconds)
            n, seconds, timed = asyncio.run(loop(traffic, policy, Timed))
            split.append((timed.decide_s / n * 1e6, timed.complete_s / n * 1e6, seconds / n * 1e6))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            with open(decisions, "wb", buffering=1 << 20) as out:
                asyncio.run(full(traffic, policy, out))
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(
                args.profile
            )
    result = {
        "records": stats.lines,
        "policy": str(args.policy),
        "records_per_second": {name: round(statistics.median(v)) for name, v in rates.items()},
        "microseconds_per_record": {
            "guard_decide": round(statistics.median(s[0] for s in split), 1),
            "guard_complete": round(statistics.median(s[1] for s in split), 1),
            "whole_loop": round(statistics.median(s[2] for s in split), 1),
        },
    }
    for name, value in result["records_per_second"].items():
        print(f"{name:>24}: {value:>9,} records/s")
    for name, value in result["microseconds_per_record"].items():
        print(f"{name:>24}: {value:>9} µs/record")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
