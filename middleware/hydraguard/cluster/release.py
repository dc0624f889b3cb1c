"""An account lets go of a value it holds, in the memory index (``release`` in the Redis
script does the same step by step).

Two callers share ``release_value``, so they leave the index alike:

* retention forgets an idle account value by value (``retention.py``);
* the per-signal cap: before an account records a new value of a signal while it holds
  ``max_values_per_account`` of them, its oldest ones go (``make_room``). Without it an
  account showing a new device or JA4 on every request grows its record for ever, and
  every edge it forms costs time in proportion to that record (``_add_edge`` intersects
  the two records).

Releasing takes the account off the value's holders with the pending weak evidence the
value gave it with each co-holder; a strong value's ``first`` moves on to the earliest
holder left; a value nobody holds any more goes. Links (edges, unions) it already made
stay, as with saturation. A value shown again later is recorded afresh.
"""

from __future__ import annotations

import heapq
from itertools import compress
from typing import TYPE_CHECKING

from .components import pair_key

if TYPE_CHECKING:
    from .index import ClusterIndex

EPSILON = 1e-9  # weights are floats: 0.1 + 0.2 must still reach 0.3
EVERYTHING = float("inf")  # withdraw a pair's whole evidence: the account is going


def withdraw(evidence: dict[int, float], key: int, weight: float) -> None:
    """Take a value's weight off a pair's pending evidence; nothing left, the entry goes."""
    left = evidence.get(key)
    if left is None:
        return
    if left - weight <= EPSILON:
        del evidence[key]
    else:
        evidence[key] = left - weight


def release_value(index: ClusterIndex, a: int, vid: int, weight: float) -> None:
    """Take account ``a`` off value ``vid``'s holders, withdrawing ``weight`` from its
    evidence with every co-holder (0 for a strong value, which gave none). The caller
    removes the value from ``a``'s seen record."""
    holders = index.holders[vid]
    if holders is None:
        return  # a saturated weak value: its holders are forgotten already
    if isinstance(holders, set):
        holders.discard(a)
        if weight:
            for b in holders:
                withdraw(index.evidence, pair_key(a, b), weight)
        if holders and index.first.get(vid) == a:
            index.first[vid] = min(holders)
        if len(holders) == 1 and vid not in index.saturated:
            index.holders[vid] = next(iter(holders))  # as if only that one had shown it
        if holders:
            return
    index.drop_value(vid)


def make_room(index: ClusterIndex, a: int, s: int) -> None:
    """Account ``a`` is about to record a new value of signal ``s``: if it holds the cap
    of them, release its oldest so that it holds one less than the cap.

    Oldest is first seen earliest; values first seen at the same time go in the order of
    their text, which the Redis index (whose record is a hash, without order) can follow.
    The caller checks the whole record's length first, so an account holding fewer values
    than the cap in all signals together pays no scan.
    """
    seen, cap = index.seen[a], index.caps[s]
    # Counted in C-level passes (map, count, compress), as this runs on every new value
    # of an account whose record is full: a few microseconds for a record of 66 values.
    vids = list(map(int, seen[0::2]))
    signals = list(map(index.value_signal.__getitem__, vids))
    count = signals.count(s)
    if count < cap:
        return
    text = index.value_text
    mine = compress(range(len(vids)), map(s.__eq__, signals))
    held = [(seen[2 * j + 1], text[vids[j]], j) for j in mine]
    gone = [j for _, _, j in heapq.nsmallest(count - cap + 1, held)]
    weight = 0.0 if index.strong[s] else index.weights[s]
    for j in gone:
        release_value(index, a, vids[j], weight)
    for j in sorted(gone, reverse=True):
        del seen[2 * j : 2 * j + 2]
    index.released += len(gone)
