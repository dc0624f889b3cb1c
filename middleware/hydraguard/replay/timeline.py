"""Output tokens served and withheld (refused or cut by a cap) over time, per class:
per-minute sums while replaying, rebinned at the end into at most MAX_BUCKETS points."""

from __future__ import annotations

import math
from typing import Any

MINUTE = 60.0
MAX_BUCKETS = 240  # points per series: enough for a plot, small in the report


class Timeline:
    def __init__(self) -> None:
        # class -> minute -> [served, withheld]; the tally adds to them directly
        self.classes: dict[str, dict[int, list[int]]] = {}

    def series(self, klass: str) -> dict[int, list[int]]:
        """The class's minutes (made on first use); the tally keeps them per account."""
        found = self.classes.get(klass)
        if found is None:
            found = self.classes[klass] = {}
        return found

    def summary(self) -> dict[str, Any]:
        """``{"start", "bucket_seconds", "series": {class: {"served", "withheld"}}}``."""
        minutes = [m for series in self.classes.values() for m in series]
        if not minutes:
            return {"start": None, "bucket_seconds": MINUTE, "series": {}}
        first, last = min(minutes), max(minutes)
        per = max(1, math.ceil((last - first + 1) / MAX_BUCKETS))  # minutes per bucket
        count = (last - first) // per + 1
        series: dict[str, Any] = {}
        for klass in sorted(self.classes):
            served, withheld = [0] * count, [0] * count
            for minute, (s, w) in self.classes[klass].items():
                served[(minute - first) // per] += s
                withheld[(minute - first) // per] += w
            series[klass] = {"served": served, "withheld": withheld}
        return {"start": first * MINUTE, "bucket_seconds": per * MINUTE, "series": series}
