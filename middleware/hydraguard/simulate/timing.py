"""When requests happen: human sessions on a diurnal profile, cron batches, and the
steady machine cadence of campaigns. All times are UTC seconds; profiles are local hours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

DAY = 86400.0

# Relative activity by local hour 0..23.
PROFILES: dict[str, tuple[float, ...]] = {
    "ordinary": (2, 1, .5, .3, .3, .5, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 6, 7, 8, 8, 7, 5, 3),
    "student": (4, 2, 1, .5, .3, .3, .5, 1, 2, 3, 3, 3, 3, 4, 5, 6, 6, 6, 7, 8, 9, 9, 8, 6),
    "work": (0, 0, 0, 0, 0, 0, .2, 1, 4, 7, 8, 7, 5, 6, 8, 8, 7, 5, 2, .8, .4, .2, .1, 0),
    "heavy": (1, .5, .2, .1, .1, .2, .5, 2, 5, 7, 8, 8, 7, 8, 8, 8, 7, 7, 7, 7, 6, 5, 4, 2),
}  # fmt: skip


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation; Knuth's loop gets slow and imprecise
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _local_days(start: float, end: float, tz: float) -> range:
    offset = tz * 3600.0
    return range(math.floor((start + offset) / DAY), math.floor((end + offset) / DAY) + 1)


def weekday(local_day: int) -> int:
    """Monday is 0; the epoch day 0 (1970-01-01) was a Thursday."""
    return (local_day + 3) % 7


def sessions(
    rng: random.Random,
    start: float,
    end: float,
    tz: float,
    profile: str,
    *,
    per_day: float,
    length_mean: float,
    gap_median: float,
    weekend: float = 0.7,
    shift: int = 0,
) -> list[list[float]]:
    """Sessions of requests: a Poisson number per local day, started at an hour drawn from
    the (``shift``-ed) profile, each a geometric number of requests separated by log-normal
    think times with short bursts. Sessions never overlap; only times in [start, end) stay."""
    hours = PROFILES[profile]
    weights = [hours[(h - shift) % 24] for h in range(24)]
    offset = tz * 3600.0
    raw: list[list[float]] = []
    for day in _local_days(start, end, tz):
        lam = per_day * (weekend if weekday(day) >= 5 else 1.0)
        for _ in range(poisson(rng, lam)):
            hour = rng.choices(range(24), weights)[0]
            t = day * DAY + (hour + rng.random()) * 3600.0 - offset
            times = [t]
            while rng.random() > 1.0 / max(1.0, length_mean):
                burst = rng.random() < 0.2
                t += (
                    rng.uniform(2.0, 9.0)
                    if burst
                    else rng.lognormvariate(math.log(gap_median), 0.8)
                )
                times.append(t)
            raw.append(times)
    raw.sort(key=lambda s: s[0])
    out: list[list[float]] = []
    last = -math.inf
    for times in raw:
        delay = max(0.0, last + 60.0 - times[0])
        kept = [t + delay for t in times if start <= t + delay < end]
        last = times[-1] + delay
        if kept:
            out.append(kept)
    return out


def nightly(
    rng: random.Random,
    start: float,
    end: float,
    tz: float,
    *,
    local_time: float,
    items: int,
    spacing: float,
) -> list[tuple[float, int]]:
    """A cron job at ``local_time`` (hours) every local day: ``items`` sequential requests,
    ``spacing`` seconds apart give or take the model's latency jitter. Returns (time, item
    number) pairs: the job walks the same item list every night."""
    out: list[tuple[float, int]] = []
    for day in _local_days(start, end, tz):
        t = day * DAY + local_time * 3600.0 - tz * 3600.0 + rng.uniform(0.0, 0.5)
        for item in range(items):
            if start <= t < end:
                out.append((t, item))
            t += spacing * rng.uniform(0.95, 1.05)
    return out


def steady(rng: random.Random, start: float, end: float, interval: float) -> Iterator[float]:
    """A machine cadence: one event every ``interval`` seconds with +-10% jitter, 24/7."""
    t = start + rng.uniform(0.0, interval)
    while t < end:
        yield t
        t += interval * rng.uniform(0.9, 1.1)


def exponential(rng: random.Random, start: float, end: float, mean: float) -> Iterator[float]:
    """A Poisson process with ``mean`` seconds between events, 24/7."""
    t = start + rng.expovariate(1.0 / mean)
    while t < end:
        yield t
        t += rng.expovariate(1.0 / mean)
