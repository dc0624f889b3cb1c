"""In-process storage: exact for one process, no I/O, atomic because nothing awaits inside."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .base import (
    Charge,
    Check,
    KeyLayout,
    Lease,
    Storage,
    Verdict,
    counter_at,
    merged_entries,
    retry_after,
    window_usage,
)

Entry = tuple[float, float, float, int]
_SWEEP_EVERY = 50_000  # operations between sweeps of idle counters


class MemoryStorage(Storage):
    shared = False

    def __init__(self, uri: str = "memory://", *, sliding: bool = True) -> None:
        self.uri = uri
        self.sliding = sliding
        # key -> (window_id, current, previous, window): two numbers per limit, whatever the
        # traffic. Tuples of numbers, replaced on update: the garbage collector stops tracking
        # them, so a large state does not make full collections slow.
        self._windows: dict[str, Entry] = {}
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry
        self._flags: dict[str, float] = {}  # block flag key -> expiry
        self._values: dict[str, tuple[bytes, float]] = {}  # key -> (value, monotonic expiry)
        self._ops = 0

    async def acquire(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
    ) -> Verdict:
        return self.acquire_now(checks, now, lease_id, lease_ttl)

    def acquire_now(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # The hot path, shaped for the interpreter: sliding-window arithmetic inlined (see
        # base.window_usage), and one pass that checks every limit while staging its usage and
        # counter as they are after the reservation, so that in the usual case (everything
        # fits) reserving is one dict.update in C instead of a second pass.
        n = len(checks)
        usage = [0.0] * n  # before the reservation
        reserved = [0.0] * n  # after it
        waits = [0.0] * n
        resets = [0.0] * n
        window_ids = [0] * n
        staged: dict[str, Entry] = {}  # window counters after the reservation
        lease_keys: list[str] = []  # concurrency limits: a lease each
        clock: dict[int, tuple[int, float, float]] = {}  # window -> (id, elapsed, left)
        get_window = self._windows.get
        sliding = self.sliding
        admitted = all_fit = True
        for i, check in enumerate(checks):
            window = check.window
            wait = 0.0
            if window > 0:
                key = check.key
                cost = check.cost
                found = clock.get(window)
                if found is None:
                    # Subjects share window lengths: the window arithmetic once per length.
                    window_id = int(now // window)
                    elapsed = now - window_id * window
                    found = clock[window] = (window_id, elapsed, window - elapsed)
                window_id, elapsed, left = found
                entry = get_window(key)
                if entry is None or entry[0] < window_id:
                    entry = self._roll(entry, window_id, window)
                wid, current, previous, span = entry
                behind = 0.0
                if wid > window_id:
                    # The clock is behind the counter's window (replicas whose clocks
                    # disagree, a decision made after a later one): count into that window,
                    # read at its start, rather than wiping it; waits count from now.
                    behind = wid * window - now
                    window_id, elapsed, left = int(wid), 0.0, float(window)
                staged[key] = (wid, current + cost, previous, span)
                used = previous * left / window + current if sliding else current
                after = reserved[i] = used + cost
                resets[i] = left + behind
                window_ids[i] = window_id
                if after > check.limit:
                    wait = behind + retry_after(
                        previous, current, elapsed, window, check.limit, cost, sliding
                    )
            elif window == 0:
                lease_keys.append(check.key)
                used = self._leases_held(check, now)
                reserved[i] = used + check.cost
                if used + check.cost > check.limit:
                    wait = self._lease_wait(check.key, now)
            else:  # a block flag: nothing to reserve
                used = 0.0
                until = self._flags.get(check.key)
                if until is not None and until > now:
                    wait = until - now
            usage[i] = used
            if wait:
                waits[i] = wait
                all_fit = False
                if not check.shadow:
                    admitted = False
        if admitted:
            if all_fit:
                self._windows.update(staged)
                for key in lease_keys:
                    self._leases.setdefault(key, {})[lease_id] = now + lease_ttl
                usage = reserved
            else:
                self._reserve_enforced(checks, staged, usage, reserved, now, lease_id, lease_ttl)
        self._ops += 1
        if self._ops >= _SWEEP_EVERY:
            self._sweep(now)
        return Verdict(admitted, admitted, usage, waits, resets, window_ids)

    def _leases_held(self, check: Check, now: float) -> float:
        held = self._leases.get(check.key)
        if not held:
            return 0.0
        if min(held.values()) <= now:  # leases of dead processes (or past their TTL): purged
            held = self._live_leases(check.key, now)
        return float(len(held))

    def _lease_wait(self, key: str, now: float) -> float:
        """Seconds until the first live lease of a full set expires."""
        held = self._live_leases(key, now)
        return max(min(held.values(), default=now + 1.0) - now, 0.001)

    def _reserve_enforced(
        self,
        checks: Sequence[Check],
        staged: dict[str, Entry],
        usage: list[float],
        reserved: list[float],
        now: float,
        lease_id: str,
        lease_ttl: float,
    ) -> None:
        """A shadow check refused while the enforced ones fit: reserve only the enforced ones."""
        for i, check in enumerate(checks):
            if check.shadow or check.window < 0:
                continue
            if check.window > 0:
                self._windows[check.key] = staged[check.key]
            else:
                self._leases.setdefault(check.key, {})[lease_id] = now + lease_ttl
            usage[i] = reserved[i]

    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        windows = self._windows
        for charge in charges:
            entry = windows.get(charge.key)
            delta = charge.delta
            if entry is None or delta == 0:
                continue
            # The reservation's window may have become the previous one since.
            wid, current, previous, window = entry
            if wid == charge.window_id:
                windows[charge.key] = (wid, max(current + delta, 0.0), previous, window)
            elif wid == charge.window_id + 1:
                windows[charge.key] = (wid, current, max(previous + delta, 0.0), window)
        for lease in leases:
            held = self._leases.get(lease.key)
            if held is not None:
                held.pop(lease.lease_id, None)
                if not held:
                    del self._leases[lease.key]

    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        # A pure read: reading at some time must not change what a decision at another sees.
        out: list[float] = []
        for check in checks:
            if check.window == -1:
                out.append(0.0)
            elif check.window == 0:
                held = self._leases.get(check.key) or {}
                out.append(float(sum(1 for expiry in held.values() if expiry > now)))
            elif (entry := self._windows.get(check.key)) is None:
                out.append(0.0)
            else:
                _, current, previous, elapsed = counter_at(
                    entry[0], entry[1], entry[2], now, check.window
                )
                out.append(window_usage(previous, current, elapsed, check.window, self.sliding))
        return out

    async def set_flag(self, key: str, seconds: float, now: float) -> None:
        self._flags[key] = now + seconds

    async def clear_flag(self, key: str, now: float) -> bool:
        until = self._flags.pop(key, None)
        return until is not None and until > now

    async def flag_ttl(self, key: str, now: float) -> float | None:
        until = self._flags.get(key)
        return until - now if until is not None and until > now else None

    async def put_values(self, entries: Sequence[tuple[str, bytes, float]]) -> None:
        expires = time.monotonic()
        for key, value, seconds in entries:
            self._values[key] = (value, expires + seconds)

    async def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        out: list[bytes | None] = []
        for key in keys:
            found = self._values.get(key)
            if found is not None and found[1] <= now:
                del self._values[key]
                found = None
            out.append(found[0] if found is not None else None)
        return out

    async def clear(self, prefix: str) -> int:
        for key in [k for k in self._values if k.startswith(prefix)]:
            del self._values[key]
        doomed = [k for k in self._windows if k.startswith(prefix)]
        doomed_leases = [k for k in self._leases if k.startswith(prefix)]
        for key in [k for k in self._flags if k.startswith(prefix)]:
            del self._flags[key]
        for key in doomed:
            del self._windows[key]
        for key in doomed_leases:
            del self._leases[key]
        return len(doomed) + len(doomed_leases)

    async def merge_windows(
        self, sources: Sequence[str], target: str, window: int, now: float
    ) -> None:
        # Window by window (see add_usage): the sources are read as usage() reads them.
        counters = [
            counter_at(entry[0], entry[1], entry[2], now, window)
            for key in sources
            if key != target and (entry := self._windows.get(key)) is not None
        ]
        await self.add_usage([e for e in merged_entries(target, window, counters) if e[3]])

    async def add_usage(self, entries: Sequence[tuple[str, int, int, float]]) -> None:
        for key, window, window_id, amount in entries:
            wid, current, previous, _ = self._windows.get(key) or (window_id, 0.0, 0.0, window)
            if wid == window_id:
                self._windows[key] = (wid, current + amount, previous, window)
            elif wid == window_id + 1:
                self._windows[key] = (wid, current, previous + amount, window)
            elif wid < window_id:
                self._windows[key] = (
                    window_id,
                    amount,
                    current if wid == window_id - 1 else 0.0,
                    window,
                )

    @staticmethod
    def _roll(entry: Entry | None, window_id: int, window: int) -> Entry:
        """The counter as of ``window_id``: the current count becomes the previous one. Only
        a charge stores it: a counter's window is the newest one counted in, which a clock
        behind it counts into (see acquire_now), so a read or a refusal must not move it."""
        if entry is None:
            return (window_id, 0.0, 0.0, window)
        return (window_id, 0.0, entry[1] if entry[0] == window_id - 1 else 0.0, window)

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        held = self._leases.get(key)
        if held is None:
            return {}
        expired = [lease for lease, expiry in held.items() if expiry <= now]
        for lease in expired:
            del held[lease]
        return held

    def _sweep(self, now: float) -> None:
        # Forget counters idle for two windows: they weigh nothing any more.
        self._ops = 0
        idle = [k for k, e in self._windows.items() if (e[0] + 2) * e[3] <= now]
        for key in idle:
            del self._windows[key]
        for key in [k for k in self._leases if not self._live_leases(k, now)]:
            del self._leases[key]
        for key in [k for k, until in self._flags.items() if until <= now]:
            del self._flags[key]
