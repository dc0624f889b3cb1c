"""The storage protocol: what a decision needs from shared state.

A decision is ONE call, ``acquire``: every applicable limit is checked and, only if
all enforced ones fit, reserved — all or nothing, atomically. After the response,
``settle`` corrects the token reservations to the real usage and returns the
concurrency leases; it never blocks the caller (implementations run it inline when
it is cheap, in the background otherwise, and ``drain`` waits for it).

Sliding-window counter semantics (as in ``limits``' sliding-window-counter): a window
of W seconds keeps the current and the previous fixed window's counts, and the
usage at time t is ``previous * (W - elapsed) / W + current``. With
``sliding=False`` the previous window weighs nothing (plain fixed windows).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Check:
    """One limit to check and reserve. ``window == 0`` marks a concurrency limit (a lease
    set); ``window == -1`` a block flag, which refuses while its key exists."""

    key: str
    limit: int
    window: int
    cost: int
    shadow: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class CheckShape:
    """What every plan of one policy tier shares, per check: which subject its key belongs
    to (an index into ``KeyLayout.subjects``), the rest of its key after the subject, its
    window and whether it is in shadow. Compared by identity: one object per tier, so a
    storage can keep work per shape in a dict at the cost of one pointer hash."""

    scopes: tuple[int, ...]
    names: tuple[str, ...]
    windows: tuple[int, ...]
    shadows: tuple[bool, ...]


@dataclass(frozen=True, slots=True, eq=False)
class KeyLayout:
    """How a plan's check keys are made: the key of check i is
    ``subjects[shape.scopes[i]] + shape.names[i]``, each subject a distinct prefix that ends
    with its Redis Cluster hash tag (``hg:{a:acct-1}``), and ``shape`` also holds every
    check's window and shadow flag. Given to ``acquire`` with a plan's checks, it lets
    RedisStorage pack a decision from the shape (once per tier) instead of splitting every
    key; storages may ignore it."""

    subjects: tuple[str, ...]
    shape: CheckShape


@dataclass(slots=True)
class Verdict:
    admitted: bool  # every enforced check fits (shadow checks never refuse)
    charged: bool  # whether anything was reserved (False when denied)
    usage: list[float]  # per check: usage after the reservation (or now, when not charged)
    retry_after: list[float]  # per check: seconds until it would fit (0 when it fits)
    reset: list[float]  # per check: seconds until the current window rolls over
    window_ids: list[int]  # per check: the fixed window the reservation went into

    @property
    def refusing(self) -> list[int]:
        return [i for i, wait in enumerate(self.retry_after) if wait > 0]


@dataclass(slots=True)
class Charge:
    """A correction to a token reservation, applied to the window it was made in."""

    key: str
    window: int
    window_id: int
    delta: int


@dataclass(slots=True)
class Lease:
    key: str
    lease_id: str


class Storage(ABC):
    """Shared state for decisions. Implementations: MemoryStorage, RedisStorage."""

    uri: str
    shared: bool  # True when several processes see the same counts
    sliding: bool  # sliding-window counters; False: fixed windows (read at every call)
    # Called once per batch of background settlements that failed (ResilientStorage counts
    # them in hydraguard_storage_errors_total{operation="settle"}).
    on_settle_error: Callable[[], None] | None = None

    @abstractmethod
    async def acquire(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
    ) -> Verdict:
        """Check every limit and, when all enforced ones fit, reserve them all at once.
        ``layout``, when given, says how ``checks``' keys are made (see KeyLayout)."""

    @abstractmethod
    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        """Apply token corrections and release leases without blocking the caller."""

    @abstractmethod
    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        """Current usage of each check's limit, without reserving anything."""

    @abstractmethod
    async def set_flag(self, key: str, seconds: float, now: float) -> None:
        """Create a block flag that refuses checks on ``key`` for ``seconds``."""

    @abstractmethod
    async def clear_flag(self, key: str, now: float) -> bool:
        """Remove a block flag; True when there was one in force at ``now`` (a spent one is
        removed too, but lifts no block)."""

    @abstractmethod
    async def flag_ttl(self, key: str, now: float) -> float | None:
        """Seconds a block flag has left, None when there is none."""

    @abstractmethod
    async def clear(self, prefix: str) -> int:
        """Remove every counter and lease whose key starts with ``prefix``."""

    async def add_usage(self, entries: Sequence[tuple[str, int, int, float]]) -> None:
        """Add (key, window, window id, amount) usage to counters, e.g. usage admitted
        elsewhere during an outage or two clusters' usage when they merge."""
        raise NotImplementedError

    async def merge_windows(
        self, sources: Sequence[str], target: str, window: int, now: float
    ) -> None:
        """Add the current and previous window counts of ``sources`` to ``target``
        (clusters merging: their usage adds up, it never resets)."""
        raise NotImplementedError

    @abstractmethod
    async def put_values(self, entries: Sequence[tuple[str, bytes, float]]) -> None:
        """Store small opaque values, (key, value, seconds to live) each: state that other
        components share between replicas (risk scores); a value replaces the previous one."""

    @abstractmethod
    async def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of ``keys`` (None when missing or expired)."""

    async def drain(self) -> None:  # noqa: B027 - optional: only backends with background work
        """Wait until background settlements have been applied."""

    async def ping(self) -> bool:
        return True

    async def warm(self) -> None:  # noqa: B027 - optional: only networked backends
        """Open connections and load server-side scripts, so that the first decision does
        not pay for them inside its ``storage.timeout`` (no-op without any)."""

    async def reset_connections(self) -> None:  # noqa: B027 - optional: only networked backends
        """Forget any connections, so the next call connects afresh (no-op without any)."""

    async def aclose(self) -> None:
        await self.drain()


def window_usage(
    previous: float, current: float, elapsed: float, window: int, sliding: bool
) -> float:
    if not sliding:
        return current
    return previous * (window - elapsed) / window + current


def counter_at(
    stored_id: float, current: float, previous: float, now: float, window: int
) -> tuple[int, float, float, float]:
    """(window id, current, previous, elapsed) of a counter stored as ``[stored_id, current,
    previous]``, read at ``now`` without changing it. A counter whose window is ahead of
    ``now``'s (the clock stepped back: replicas whose clocks disagree, a decision made after
    a later one) is read as at the start of its own window, as acquire counts into it: its
    counts are kept, never wiped or hidden."""
    window_id = int(now // window)
    if stored_id > window_id:
        return int(stored_id), current, previous, 0.0
    elapsed = now - window_id * window
    if stored_id == window_id:
        return window_id, current, previous, elapsed
    if stored_id == window_id - 1:
        return window_id, 0.0, current, elapsed
    return window_id, 0.0, 0.0, elapsed


def merged_entries(
    target: str, window: int, counters: Iterable[tuple[int, float, float, float]]
) -> list[tuple[str, int, int, float]]:
    """What merging counters (``counter_at``'s answers) into ``target`` adds, window by
    window: each counter's current count into its window, its previous into the one before
    (entries for ``add_usage``)."""
    added: list[tuple[str, int, int, float]] = []
    for window_id, current, previous, _ in counters:
        added += ((target, window, window_id, current), (target, window, window_id - 1, previous))
    return added


def retry_after(
    previous: float,
    current: float,
    elapsed: float,
    window: int,
    limit: int,
    cost: int,
    sliding: bool,
) -> float:
    """Seconds until ``cost`` more fits under ``limit`` if nothing else is added.

    Solves the sliding-window-counter formula for the time at which the previous
    window's weight has decayed enough; a cost above the limit never fits, so it
    waits a whole window (the caller reports it as too large).
    """
    room = limit - cost
    if room < 0:
        return float(window)
    if window_usage(previous, current, elapsed, window, sliding) <= room:
        return 0.0
    to_next = window - elapsed
    if current <= room and sliding:
        # Still in this window: wait for previous * (W - e) / W <= room - current.
        return max(window * (1 - (room - current) / previous) - elapsed, 0.001)
    if not sliding:
        return to_next
    # Next window: the current count becomes the previous one and decays from there.
    return to_next + max(window * (1 - room / current), 0.0)


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))
