"""Garbage-collector settings for a long-running gateway process.

hydraguard keeps per-account and per-cluster state (detector windows, linking evidence)
that grows to hundreds of thousands of objects. CPython's full collections scan all of
them; under load that showed as a 200-300 ms p99 (benchmarks/README.md). Freezing what
exists at startup and making full collections rarer keeps the young collections cheap and
the pauses rare; hydraguard's state holds no reference cycles that would need them sooner.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 1000  # gen-1 collections between full collections (CPython default: 10)


def tune_for_long_running_state() -> None:
    gc.collect()
    gc.freeze()  # everything alive at startup: never scanned again
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
