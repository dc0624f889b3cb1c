"""Link N accounts (default 1,000,000) with 5 signals each in the memory ClusterIndex.

    python benchmarks/bench_linking.py [--accounts N] [--seed S]

The population is synthetic but shaped like real traffic: payment and device
fingerprints mostly unique with a few shared by small rings, a handful of
common JA4 fingerprints, client addresses spread over /24s with a few busy NATs,
and prompt templates (4 LSH bands) mostly unique with a pool of popular ones.
Prints the wall time of the linking loop and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time

from hydraguard.cluster.config import ClusteringConfig
from hydraguard.cluster.index import ClusterIndex


def population(n: int, seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    ja4s = [f"t13d1516h2_8daaf6152771_{i:012x}" for i in range(40)]
    nats = [f"198.51.{i}.7" for i in range(20)]
    popular = [f"tpl-popular-{i}" for i in range(5_000)]
    for i in range(n):
        # 2% of accounts belong to rings of ~8 sharing one card and one device
        ring = rng.randrange(max(1, n // 400)) if rng.random() < 0.02 else None
        payment = f"pay-ring-{ring}" if ring is not None else f"pay-{rng.getrandbits(64):016x}"
        device = f"dev-ring-{ring}" if ring is not None else f"dev-{rng.getrandbits(64):016x}"
        if rng.random() < 0.05:
            ip = rng.choice(nats)
        else:
            ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.9"
        subnet = ip.rsplit(".", 1)[0] + ".0/24"
        template = (
            f"tpl-{rng.getrandbits(64):016x}"
            if rng.random() < 0.8
            else popular[min(int(rng.paretovariate(1.2)) - 1, len(popular) - 1)]
        )
        yield (
            f"acct-{i:07d}",
            {
                "payment": (payment,),
                "device": (device,),
                "ja4": (ja4s[min(int(rng.expovariate(0.3)), len(ja4s) - 1)],),
                "subnet": (subnet,),
                "template": tuple(f"{template}:b{band}" for band in range(4)),
            },
            1_764_230_400.0 + i * 0.01,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    index = ClusterIndex(ClusteringConfig())
    observe = index.observe
    start = time.perf_counter()
    for account, signals, ts in population(args.accounts, args.seed):
        observe(account, signals, ts)
    elapsed = time.perf_counter() - start

    stats = index.stats()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024
    print(f"accounts          {args.accounts:,}")
    print(f"wall time         {elapsed:.1f} s ({args.accounts / elapsed:,.0f} accounts/s)")
    print("  (includes generating the synthetic population)")
    print(f"peak RSS          {peak_mib:,.0f} MiB")
    print(f"clusters (2+)     {stats.clusters:,}")
    print(f"size histogram    {dict(sorted(stats.sizes.items()))}")
    print(f"links by signal   {dict(sorted(stats.links_by_signal.items()))}")
    print(f"saturated values  {stats.saturated_values:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
