"""Volume: request rate against the subject's own baseline and against what its tier expects.

Evidence: extraction needs volume (Anthropic's 2025-2026 reports count
millions of exchanges; hydra clusters spread them so each account stays a
light user, which is why this detector matters most at cluster level).

Two exponentially decayed counters (fast and slow half-lives) estimate the
recent and the baseline rate; both are corrected for the subject's age, so a
new subject with a steady rate shows no spike. The score is the larger of a
spike (fast/slow) gated by the rate being a sizeable share of the expected
rate, and the excess of the fast rate over the expected rate (per tier for
accounts, ``cluster_expected_per_minute`` for clusters).

Minimum evidence: ``min_events`` requests.
"""

from __future__ import annotations

import math
from typing import Any

from hydraguard.assess.config import Volume
from hydraguard.assess.detectors.base import Scope, ramp
from hydraguard.assess.events import RequestEvent

_LN2 = math.log(2.0)


class VolumeState:
    __slots__ = ("expected", "fast", "first", "last", "n", "slow")

    def __init__(self) -> None:
        self.fast = 0.0  # decayed request counts
        self.slow = 0.0
        self.first: float | None = None
        self.last = 0.0
        self.n = 0
        self.expected = 0.0  # requests per minute the subject's tier expects

    def to_dict(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}


class VolumeDetector:
    name = "volume"
    arrival = True

    def __init__(self, config: Volume, scope: Scope = "account") -> None:
        self.config = config
        self.scope = scope
        self.expected = dict(config.expected_per_minute)
        self.default_expected = self.expected.get("default", 30.0)

    def new_state(self) -> VolumeState:
        return VolumeState()

    def load_state(self, data: dict[str, Any]) -> VolumeState:
        state = VolumeState()
        for name in VolumeState.__slots__:
            if data.get(name) is not None:
                setattr(state, name, int(data[name]) if name == "n" else float(data[name]))
        return state

    def observe(self, state: VolumeState, event: RequestEvent) -> None:
        ts = event.ts
        if state.first is None:
            state.first = state.last = ts
        elif ts > state.last:
            dt = ts - state.last
            state.fast *= 2.0 ** (-dt / self.config.fast_half_life)
            state.slow *= 2.0 ** (-dt / self.config.slow_half_life)
            state.last = ts
        state.fast += 1.0
        state.slow += 1.0
        state.n += 1
        if self.scope == "cluster":
            state.expected = self.config.cluster_expected_per_minute
        else:
            state.expected = self.expected.get(event.tier, self.default_expected)

    def _rate(self, count: float, half_life: float, idle: float, age: float) -> float:
        """Requests per minute from a decayed count, corrected for a young subject."""
        if idle > 0.0:
            count *= 2.0 ** (-idle / half_life)
        rate = count * _LN2 / half_life * 60.0
        if age < 20.0 * half_life:  # older than that, the counter is full to 1e-6
            rate /= 1.0 - 2.0 ** (-max(age, 1.0) / half_life)
        return rate

    def rates(self, state: VolumeState, now: float) -> tuple[float, float]:
        """(fast, slow) requests per minute at ``now``."""
        if state.first is None:
            return 0.0, 0.0
        idle = max(now - state.last, 0.0)
        age = max(now, state.last) - state.first
        return (
            self._rate(state.fast, self.config.fast_half_life, idle, age),
            self._rate(state.slow, self.config.slow_half_life, idle, age),
        )

    def score(self, state: VolumeState, now: float) -> float:
        config = self.config
        if state.n < config.min_events:
            return 0.0
        fast, slow = self.rates(state, now)
        load = fast / state.expected
        spike = ramp(fast / max(slow, 1e-9), config.spike_low, config.spike_high) * ramp(
            load, 0.5, 1.0
        )
        return max(spike, ramp(load, config.excess_low, config.excess_high))
