"""Activity spread: traffic in every hour of the day (24/7), the mark of load-balanced automation.

Evidence: Anthropic's reports on distillation campaigns (2025-2026) describe
"hydra clusters" whose many accounts share the load around the clock; a
person, a team or a nightly job is active in some hours and idle in others.
The signal is meaningful mostly at cluster level, where the accounts add up.

Hourly buckets over the last 24 hours (24 slots, each remembering which
absolute hour it counts) give the hour-of-day distribution; its Shannon
entropy normalised by log(24) is 1 for perfectly even 24/7 traffic. The
entropy is kept incrementally (sum of c*log c) so scoring is O(1).

Minimum evidence: ``min_events`` requests in the last 24 hours spread over at
least ``min_active_hours`` distinct hours.
"""

from __future__ import annotations

import math
from typing import Any

from hydraguard.assess.config import ActivitySpread
from hydraguard.assess.detectors.base import Scope, ramp
from hydraguard.assess.events import RequestEvent

_LOG24 = math.log(24.0)


def _clogc(count: int) -> float:
    return count * math.log(count) if count > 1 else 0.0


class SpreadState:
    __slots__ = ("active", "clogc", "counts", "hours", "latest", "total")

    def __init__(self) -> None:
        self.counts = [0] * 24
        self.hours = [-1] * 24  # absolute hour (ts // 3600) each slot counts
        self.latest = -1
        self.total = 0
        self.active = 0
        self.clogc = 0.0

    def recount(self) -> None:
        live = [
            c for c, h in zip(self.counts, self.hours, strict=True) if h > self.latest - 24 and c
        ]
        self.total, self.active = sum(live), len(live)
        self.clogc = sum(_clogc(c) for c in live)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "hours": list(self.hours), "latest": self.latest}


class ActivitySpreadDetector:
    name = "activity_spread"
    arrival = True

    def __init__(self, config: ActivitySpread, scope: Scope = "account") -> None:
        self.config = config

    def new_state(self) -> SpreadState:
        return SpreadState()

    def load_state(self, data: dict[str, Any]) -> SpreadState:
        state = SpreadState()
        state.counts = [int(c) for c in data.get("counts", state.counts)][:24]
        state.hours = [int(h) for h in data.get("hours", state.hours)][:24]
        state.latest = int(data.get("latest", -1))
        state.recount()
        return state

    def observe(self, state: SpreadState, event: RequestEvent) -> None:
        hour = int(event.ts // 3600)
        if hour <= state.latest - 24:
            return  # older than the window
        if hour > state.latest:
            if state.total:
                self._expire(state, hour)
            state.latest = hour
        slot = hour % 24
        if state.hours[slot] != hour:
            state.hours[slot], state.counts[slot] = hour, 0
        count = state.counts[slot]
        state.counts[slot] = count + 1
        state.total += 1
        state.active += count == 0
        state.clogc += _clogc(count + 1) - _clogc(count)

    @staticmethod
    def _expire(state: SpreadState, hour: int) -> None:
        """Move the window's end to ``hour``: forget the slots that fall out of it.

        Only the slots of the hours skipped over can expire (at most 24), and the
        totals move by what they held: no recount, which cost as much as the rest of
        observe for the many subjects whose next request comes in a new hour.
        """
        counts, hours = state.counts, state.hours
        for h in range(max(state.latest, hour - 24) - 23, hour - 23):
            slot = h % 24
            count = counts[slot]
            if count and state.latest - 24 < hours[slot] <= hour - 24:
                counts[slot] = 0
                state.total -= count
                state.active -= 1
                state.clogc -= _clogc(count)
        if not state.total:
            state.clogc = 0.0  # no floating-point residue once empty

    def entropy(self, state: SpreadState, now: float) -> tuple[float, int, int]:
        """(normalised entropy, requests, active hours) over the 24 hours before ``now``."""
        now_hour = int(now // 3600)
        if now_hour <= state.latest:
            total, active, clogc = state.total, state.active, state.clogc
        else:  # idle since: leave the stored state alone, count what is still in the window
            live = [
                c for c, h in zip(state.counts, state.hours, strict=True) if h > now_hour - 24 and c
            ]
            total, active, clogc = sum(live), len(live), sum(_clogc(c) for c in live)
        if total == 0:
            return 0.0, 0, 0
        return (math.log(total) - clogc / total) / _LOG24, total, active

    def score(self, state: SpreadState, now: float) -> float:
        entropy, total, active = self.entropy(state, now)
        if total < self.config.min_events or active < self.config.min_active_hours:
            return 0.0
        return ramp(entropy, self.config.low, self.config.high)
