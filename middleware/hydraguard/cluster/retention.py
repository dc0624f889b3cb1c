"""Retention for the memory index: forget accounts never linked and unseen too long.

Without it the index keeps every account ever seen. An account is forgotten only when
nothing ties it to another: it stands alone (cluster of one), has no edge (so no
operator link) and no never-link constraint. What goes: its entries as a holder of
values (``release.py``: a value nobody holds any more disappears and its number is
reused), the pending weak evidence of pairs it is part of, its seen record and cached
cluster id.
What stays: its account number, as a few list slots (numbers give the arrival order
that ties are broken by, as in the Redis index, so they are never reused). An account
that comes back is a new one.

The clock is the observation timestamp, never wall time: replay drives the index with
the log's timestamps and stays deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from .release import EVERYTHING, release_value

if TYPE_CHECKING:
    from .index import ClusterIndex

# A forgotten account's seen record: shared, since nothing can reach a forgotten number
# to add to it (the name now interns to a new number).
FORGOTTEN: list[float] = []


class IdleQueue:
    """Account numbers by last observation, least recently seen first."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._last: OrderedDict[int, float] = OrderedDict()
        # No account is idle before this time: observations compare against it and only
        # then sweep, so the common case allocates nothing (sweeping on every observation
        # cost +17% time linking 200,000 accounts, mostly garbage-collector pressure).
        self.next_due = float("inf")

    def touch(self, a: int, ts: float) -> None:
        last = self._last
        if not last:
            self.next_due = ts + self.retention
        before = last.pop(a, None)
        # Observations may come slightly out of order (learning happens after the response).
        last[a] = ts if before is None or ts > before else before

    def pop_idle(self, now: float, limit: int) -> list[int]:
        """Up to ``limit`` accounts unseen for longer than retention, taken off the queue."""
        cutoff, last = now - self.retention, self._last
        out: list[int] = []
        while last:
            a, ts = next(iter(last.items()))
            if ts >= cutoff:
                self.next_due = ts + self.retention
                return out
            if len(out) == limit:
                self.next_due = float("-inf")  # more are due
                return out
            del last[a]
            out.append(a)
        self.next_due = float("inf")
        return out

    def __len__(self) -> int:
        return len(self._last)


def forgettable(index: ClusterIndex, a: int) -> bool:
    """Never linked to anyone: a cluster of one, no edge, no never-link constraint."""
    uf = index.uf
    return (
        uf.parent[a] == a and uf.size[a] == 1 and a not in index.adjacent and not uf.constrained(a)
    )


def release_values(index: ClusterIndex, a: int) -> None:
    """Take the account off every value it holds, with all the pending evidence it gave."""
    seen = index.seen[a]
    for i in range(0, len(seen), 2):
        release_value(index, a, int(seen[i]), EVERYTHING)
