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

``--replay`` counts instructions per replayed record instead (issue #7's budget): the
default scenario's first two simulated hours (``--seed``), the shipped default policy,
``replay_file`` writing decision lines to memory. A child replays the first ``--warm``
records uncollected, then ``--small`` or ``--large`` more with the same engine, collected;
the difference per record is the steady cost of the records between. Configurations:
``replay`` (the real thing), ``machinery`` (``bench_replay.AdmitAll``, a stand-in Guard that
admits everything: replay's own loop) and the ablations above, applied to the replay's
policy. Results go to ``benchmarks/out/replay_instructions.json``.
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
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
# Configurations that switch a part off in the policy (ablated_policy) rather than in code.
POLICY_ABLATIONS = ("no-anomaly", "no-clustering", "limits-only", "no-cluster-limits")
REPLAY_CONFIGS = (
    "replay",
    "machinery",
    "no-learning",
    "no-metrics",
    "no-anomaly",
    "no-clustering",
    "limits-only",
)


def _ablate(config: str) -> None:
    """Switch off the part of HydraGuard that ``config`` names (child process only)."""
    import variants

    if config == "no-learning":
        from hydraguard.assess.learning import Learning

        Learning.learn = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    elif config == "no-metrics":
        import prometheus_client.metrics as metrics

        metrics.Counter.inc = lambda self, amount=1, exemplar=None: None  # type: ignore[method-assign]
        metrics.Histogram.observe = lambda self, amount, exemplar=None: None  # type: ignore[method-assign]
        metrics.Gauge.inc = lambda self, amount=1: None  # type: ignore[method-assign]
        metrics.Gauge.dec = lambda self, amount=1: None  # type: ignore[method-assign]
    elif config in POLICY_ABLATIONS:
        variants.bench_policy = lambda: ablated_policy(config, _policy_data())


def ablated_policy(config: str, data: dict[str, Any]) -> Any:
    """The policy ``data`` with the part ``config`` names switched off, compiled."""
    import yaml

    from hydraguard.policy.compiled import compile_policy
    from hydraguard.policy.loader import parse_policy

    if config in ("no-anomaly", "limits-only"):
        data["anomaly"]["enabled"] = False
    if config in ("no-clustering", "limits-only"):
        data["clustering"]["enabled"] = False
    if config in ("no-clustering", "limits-only", "no-cluster-limits"):
        data.pop("clusters", None)
    parsed = parse_policy(yaml.safe_dump(data), "ablated.yaml")
    return compile_policy(parsed, source="ablated.yaml")


def _default_policy_data() -> dict[str, Any]:
    """The shipped default policy as data."""
    import yaml

    from hydraguard.policy.loader import default_policy_path

    return yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _policy_data() -> dict[str, object]:
    """The benchmark policy as data: the shipped default with huge global limits."""
    import variants

    data = _default_policy_data()
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


def replay_child(config: str, traffic: str, warm: int, records: int) -> None:
    """Replay ``warm`` records of ``traffic`` uncollected, then ``records`` more collected."""
    sys.path.insert(0, str(HERE))
    import io

    import bench_replay

    from hydraguard.policy.loader import load_policy
    from hydraguard.replay.engine import Engine
    from hydraguard.replay.run import replay_file

    _ablate(config)
    if config in POLICY_ABLATIONS:
        policy = ablated_policy(config, _default_policy_data())
    else:
        policy = load_policy(None)
    lines = Path(traffic).read_bytes().splitlines(keepends=True)
    if len(lines) < warm + records:
        raise SystemExit(f"{traffic} has {len(lines)} lines, fewer than {warm + records}")
    folder = Path(traffic).parent
    first, then = folder / f"warm-{os.getpid()}.jsonl", folder / f"then-{os.getpid()}.jsonl"
    first.write_bytes(b"".join(lines[:warm]))
    then.write_bytes(b"".join(lines[warm : warm + records]))
    engine = Engine(policy)
    if config == "machinery":
        engine.guard = bench_replay.AdmitAll(engine.guard.identifier)
    asyncio.run(replay_file(first, policy, decisions=io.BytesIO(), engine=engine))
    # Collected: callgrind counts only inside exec (--toggle-collect), i.e. this call.
    exec("asyncio.run(replay_file(then, policy, decisions=io.BytesIO(), engine=engine))")


def count(config: str, requests: int) -> int:
    return collected([__file__, "--child", config, str(requests)], config)


def count_replay(config: str, traffic: str, warm: int, records: int) -> int:
    script = [__file__, "--replay-child", config, traffic, str(warm), str(records)]
    return collected(script, config)


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


def measure(
    configs: list[str], run: Callable[[str, int], int], small: int, large: int, unit: str
) -> dict[str, int]:
    """Per-unit instructions of each configuration: ``run`` at ``large`` minus at ``small``
    (the two runs in parallel), divided by the difference."""
    results: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for config in configs:
            fewer, more = pool.map(run, [config, config], [small, large])
            results[config] = (more - fewer) // (large - small)
            print(f"{config:14s} {results[config]:>9,} instructions/{unit}", flush=True)
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) == 6 and sys.argv[1] == "--replay-child":
        replay_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None, help="comma-separated (default: all)")
    parser.add_argument("--small", type=int, default=None, help="default 500 (replay 1000)")
    parser.add_argument("--large", type=int, default=None, help="default 1500 (replay 4000)")
    parser.add_argument("--replay", action="store_true", help="instructions per replayed record")
    parser.add_argument("--warm", type=int, default=4000, help="replay: records before counting")
    parser.add_argument("--seed", type=int, default=0, help="replay: the simulated traffic's")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    known = REPLAY_CONFIGS if args.replay else CONFIGS
    configs = [c for c in (args.configs or ",".join(known)).split(",") if c]
    unknown = set(configs) - set(known)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {', '.join(known)}")
    if args.replay:
        replay_main(configs, args.warm, args.small or 1000, args.large or 4000, args.seed)
        return
    results = measure(configs, count, args.small or 500, args.large or 1500, "request")
    if "bare" in results and "hydraguard" in results:
        added = results["hydraguard"] - results["bare"]
        print(f"HydraGuard adds {added:,} ({added / results['bare']:.2f}x the bare app)")
        for config in configs:
            if config not in ("bare", "hydraguard"):
                print(f"  {config}: {results['hydraguard'] - results[config]:,} less")
    OUT.mkdir(exist_ok=True)
    (OUT / "instructions.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


def replay_main(configs: list[str], warm: int, small: int, large: int, seed: int) -> None:
    from hydraguard.simulate.generate import write
    from hydraguard.simulate.scenario import Scenario

    with tempfile.TemporaryDirectory() as tmp:
        traffic = str(Path(tmp) / "traffic.jsonl")
        stats = write(Scenario(seed=seed, hours=2.0), Path(traffic))
        print(f"traffic: {stats.summary()}", file=sys.stderr)

        def run(config: str, n: int) -> int:
            return count_replay(config, traffic, warm, n)

        results = measure(configs, run, small, large, "record")
    if "replay" in results:
        for config in configs:
            if config != "replay":
                print(f"  {config}: {results['replay'] - results[config]:,} less")
    OUT.mkdir(exist_ok=True)
    (OUT / "replay_instructions.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
