"""The protocol every detector follows, and the small pieces they share.

A detector is stateless configuration plus per-subject *state* (one per account
and one per cluster) that it creates, updates and scores. States are bounded
(fixed-size rings, decayed counters, 24 hourly buckets) and turn into a dict of
plain JSON types and back, so the engine can keep them in an LRU or in Redis.
Detectors never read the wall clock: ``event.ts`` and ``now`` are the clock.
"""

from __future__ import annotations

from array import array
from typing import Any, Literal, Protocol

from hydraguard.assess.events import RequestEvent

Scope = Literal["account", "cluster"]


class State(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class Detector(Protocol):
    name: str
    # Reads when requests arrive (rates, pacing, hours), not what they ask: a batch's
    # other entries (``RiskEngine.observe``'s ``entries``) are not fed to it.
    arrival: bool

    def new_state(self) -> Any: ...

    def load_state(self, data: dict[str, Any]) -> Any: ...

    def observe(self, state: Any, event: RequestEvent) -> None: ...

    def score(self, state: Any, now: float) -> float: ...


def ramp(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between."""
    if value <= low:
        return 0.0
    if value >= high:
        return 1.0
    return (value - low) / (high - low)


class Ring:
    """The last ``capacity`` numbers and their running total (a windowed share or mean)."""

    __slots__ = ("capacity", "pos", "total", "values")

    def __init__(self, capacity: int, values: list[float] | None = None, pos: int = 0) -> None:
        self.capacity = capacity
        if values is None:
            # A new subject's rings (four per subject): nothing to copy, wrap or sum.
            self.values = array("d")
            self.pos = 0
            self.total = 0.0
            return
        # array, not list: numbers only, so the garbage collector never has to scan it
        self.values = array("d", list(values)[:capacity])
        self.pos = pos % capacity if self.values else 0
        self.total = float(sum(self.values))

    def push(self, value: float) -> None:
        values = self.values
        if len(values) < self.capacity:
            values.append(value)
            self.total += value
            return
        self.total += value - values[self.pos]
        values[self.pos] = value
        self.pos += 1
        if self.pos == self.capacity:
            self.pos = 0
            self.total = float(sum(values))  # once per lap: no floating-point drift

    def __len__(self) -> int:
        return len(self.values)

    def mean(self) -> float:
        return self.total / len(self.values) if self.values else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "pos": self.pos}

    @classmethod
    def from_dict(cls, capacity: int, data: dict[str, Any]) -> Ring:
        return cls(capacity, data.get("values"), int(data.get("pos", 0)))


class EventMemo:
    """Remembers one per-event value so the account and cluster states share its cost."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event: RequestEvent | None = None
        self.value: Any = None
