"""Instructions per request under callgrind: a measure the machine's load does not move.

    python benchmarks/count_instructions.py [--configs bare,hydraguard,...] [--small 500] [--large 1500]

Timings on a shared host move by tens of percent between runs; instruction counts
(``valgrind --tool=callgrind``, Debian package ``valgrind``) repeat to a fraction of a
percent, so they show what a change to the code saves. Each configuration runs the
overhead benchmark's driver (``bench_overhead.drive``: the same app variants and traffic,
here over 300 accounts so that accounts repeat, an event-loop turn every 32 calls) in a
child process under callgrind, with collection switched on only around the measured
calls (``--toggle-collect`` on ``exec``); the count at ``--large`` requests minus the count
at ``--small`` requests, divided by the difference, is the per-request cost without any
start-up or warm-up. The two runs of a configuration go in parallel.

Configurations: ``bare`` and ``hydraguard`` (the variants), and ablations of HydraGuard
that switch one part off to show its share: ``no-learning`` (nothing learned after the
response), ``no-metrics`` (Prometheus updates are no-ops), ``no-anomaly``
(``anomaly.enabled: false``), ``no-clustering`` (no linking, no cluster limits) and
``limits-only`` (both of the last two), ``no-cluster-limits`` (linking on, no cluster
limits); and ``floor``, ``bench_floor.Floor`` over the bare
app (the least middleware doing issue #2's per-request work). Results also go to ``benchmarks/out/instructions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CONFIGS = (
    "bare",
    "hydraguard",
    "no-learning",
    "no-metrics",
    "no-anomaly",
    "no-clustering",
    "limits-only",
    "no-cluster-limits",
    "floor",
)
WARM_UP = 300
ACCOUNTS = 300


def _ablate(config: str) -> None:
    """Switch off the part of HydraGuard that ``config`` names (child process only)."""
    import variants
    import yaml

    from hydraguard.policy.compiled import compile_policy
    from hydraguard.policy.loader import parse_policy

    if config == "no-learning":
        from hydraguard.assess.learning import Learning

        Learning.learn = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    elif config == "no-metrics":
        import prometheus_client.metrics as metrics

        metrics.Counter.inc = lambda self, amount=1, exemplar=None: None  # type: ignore[method-assign]
        metrics.Histogram.observe = lambda self, amount, exemplar=None: None  # type: ignore[method-assign]
        metrics.Gauge.inc = lambda self, amount=1: None  # type: ignore[method-assign]
        metrics.Gauge.dec = lambda self, amount=1: None  # type: ignore[method-assign]
    elif config in ("no-anomaly", "no-clustering", "limits-only", "no-cluster-limits"):

        def policy():  # type: ignore[no-untyped-def]
            data = _policy_data()
            if config in ("no-anomaly", "limits-only"):
                data["anomaly"]["enabled"] = False
            if config in ("no-clustering", "limits-only"):
                data["clustering"]["enabled"] = False
            if config in ("no-clustering", "limits-only", "no-cluster-limits"):
                data.pop("clusters", None)
            parsed = parse_policy(yaml.safe_dump(data), "ablated.yaml")
            return compile_policy(parsed, source="ablated.yaml")

        variants.bench_policy = policy


def _policy_data() -> dict[str, object]:
    """The benchmark policy as data: the shipped default with huge global limits."""
    import variants
    import yaml

    from hydraguard.policy.loader import default_policy_path

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["global"]["requests"] = f"{variants.HUGE}/minute"
    data["global"]["tokens"] = f"{variants.HUGE}/minute"
    return data  # type: ignore[no-any-return]


def child(config: str, requests: int) -> None:
    sys.path.insert(0, str(HERE))
    import bench_overhead
    import variants

    _ablate(config)
    if config == "floor":
        import bench_floor
        from prometheus_client import CollectorRegistry

        app = bench_floor.Floor(variants.build("bare"), CollectorRegistry())
    else:
        app = variants.build("bare" if config == "bare" else "hydraguard")
    traffic = bench_overhead.Traffic(ACCOUNTS, "instr", WARM_UP + requests)
    asyncio.run(bench_overhead.drive(app, traffic, WARM_UP, 0))
    # Collected: callgrind counts only inside exec (--toggle-collect), i.e. these calls.
    exec("asyncio.run(bench_overhead.drive(app, traffic, requests, WARM_UP))")


def count(config: str, requests: int) -> int:
    return collected([__file__, "--child", config, str(requests)], config)


def collected(script: list[str], name: str) -> int:
    """Instructions callgrind counts inside ``exec`` while Python runs ``script``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=builtin_exec*",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        *script,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{name}: callgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=1500)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    results: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for config in configs:
            small, large = pool.map(count, [config, config], [args.small, args.large])
            results[config] = (large - small) // (args.large - args.small)
            print(f"{config:14s} {results[config]:>9,} instructions/request", flush=True)
    if "bare" in results and "hydraguard" in results:
        added = results["hydraguard"] - results["bare"]
        print(f"HydraGuard adds {added:,} ({added / results['bare']:.2f}x the bare app)")
        for config in configs:
            if config not in ("bare", "hydraguard"):
                print(f"  {config}: {results['hydraguard'] - results[config]:,} less")
    OUT.mkdir(exist_ok=True)
    (OUT / "instructions.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
