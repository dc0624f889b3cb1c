"""Memory of the in-process linking index with and without retention (tracemalloc).

    python benchmarks/bench_retention.py [--accounts 20000] [--rounds 4]

Each round N new accounts arrive, one retention period after the last round, with the
default policy's signals (their own card and device, a JA4 and a /24 shared by 40, no
link among them). With retention the previous round is forgotten as the new one is
observed (a few idle accounts per observation); without it every account is kept.
Prints, per round, the bytes traced per account still known and what each round added
per account: with retention, what a forgotten account leaves behind.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from hydraguard.cluster.config import ClusteringConfig
from hydraguard.cluster.index import ClusterIndex

RETENTION = 90 * 86400.0
T0 = 1_764_230_400.0


def signals(r: int, i: int) -> dict[str, tuple[str, ...]]:
    return {
        "payment": (f"card-{r}-{i}",),
        "device": (f"device-{r}-{i}",),
        "ja4": (f"t13d1516h2_{r}_{i // 40:08x}",),
        "subnet": (f"{r}.{i // 10240}.{i // 40 % 256}.0/24",),
    }


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def run(retention: float, accounts: int, rounds: int) -> None:
    print(f"retention {retention:.0f} s")
    index = ClusterIndex(ClusteringConfig(retention=retention))
    start = previous = traced()
    for r in range(rounds):
        now = T0 + r * (RETENTION + 1)
        for i in range(accounts):
            index.observe(f"acct-{r}-{i}", signals(r, i), now)
        used, known = traced(), index.stats().accounts
        print(
            f"  round {r}: {known:,} accounts known, {(used - start) / known:,.0f} B each;"
            f" the round added {(used - previous) / accounts:,.0f} B per new account"
        )
        previous = used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    tracemalloc.start()
    for retention in (RETENTION, 0.0):
        run(retention, args.accounts, args.rounds)


if __name__ == "__main__":
    main()
