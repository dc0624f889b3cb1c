"""Timing regularity: machine-like inter-arrival times (a low coefficient of variation).

Evidence: automated harvesting runs from schedulers and worker pools at a
steady pace (Anthropic's 2025-2026 reports on distillation campaigns describe
load-balanced traffic across many accounts); people type, read and pause, so
their inter-arrival times vary at least as much as a Poisson process (CV ~ 1).

The last ``window`` intervals within a session (pauses above ``max_gap`` end a
session and are not counted) give mean and standard deviation; CV at or below
``cv_regular`` scores 1, at or above ``cv_human`` scores 0. Events observed
out of order count as zero intervals; observe in arrival order when possible.

Minimum evidence: ``min_events`` intervals.
"""

from __future__ import annotations

import math
from typing import Any

from hydraguard.assess.config import TimingRegularity
from hydraguard.assess.detectors.base import Ring, Scope, ramp
from hydraguard.assess.events import RequestEvent


class TimingState:
    __slots__ = ("intervals", "last", "squares")

    def __init__(self, intervals: Ring, squares: Ring) -> None:
        self.intervals = intervals
        self.squares = squares
        self.last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"intervals": self.intervals.to_dict(), "last": self.last}


class TimingRegularityDetector:
    name = "timing_regularity"
    arrival = True

    def __init__(self, config: TimingRegularity, scope: Scope = "account") -> None:
        self.config = config

    def new_state(self) -> TimingState:
        return TimingState(Ring(self.config.window), Ring(self.config.window))

    def load_state(self, data: dict[str, Any]) -> TimingState:
        intervals = Ring.from_dict(self.config.window, data.get("intervals", {}))
        squares = Ring(self.config.window, [v * v for v in intervals.values], intervals.pos)
        state = TimingState(intervals, squares)
        last = data.get("last")
        state.last = None if last is None else float(last)
        return state

    def observe(self, state: TimingState, event: RequestEvent) -> None:
        last = state.last
        if last is None or event.ts > last:
            state.last = event.ts
        if last is None:
            return
        interval = max(event.ts - last, 0.0)
        if interval > self.config.max_gap:
            return
        state.intervals.push(interval)
        state.squares.push(interval * interval)

    def cv(self, state: TimingState) -> float:
        mean = state.intervals.mean()
        if mean <= 1e-3:  # a burst of simultaneous requests: as regular as it gets
            return 0.0
        variance = max(state.squares.mean() - mean * mean, 0.0)
        return math.sqrt(variance) / mean

    def score(self, state: TimingState, now: float) -> float:
        if len(state.intervals) < self.config.min_events:
            return 0.0
        return 1.0 - ramp(self.cv(state), self.config.cv_regular, self.config.cv_human)
