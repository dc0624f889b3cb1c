"""In-process storage: exact for one process, no I/O, atomic because nothing awaits inside."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Charge, Check, Lease, Storage, Verdict, retry_after, window_usage

_SWEEP_EVERY = 50_000  # operations between sweeps of idle counters


class MemoryStorage(Storage):
    shared = False

    def __init__(self, uri: str = "memory://", *, sliding: bool = True) -> None:
        self.uri = uri
        self.sliding = sliding
        # key -> [window_id, current, previous, window]; two numbers per limit, whatever the traffic.
        self._windows: dict[str, list[float]] = {}
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry
        self._flags: dict[str, float] = {}  # block flag key -> expiry
        self._ops = 0

    async def acquire(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        return self.acquire_now(checks, now, lease_id, lease_ttl)

    def acquire_now(
        self, checks: Sequence[Check], now: float, lease_id: str, lease_ttl: float
    ) -> Verdict:
        # Inlined sliding-window arithmetic (see base.window_usage): this is the hot path.
        n = len(checks)
        usage = [0.0] * n
        waits = [0.0] * n
        resets = [0.0] * n
        window_ids = [0] * n
        entries: list[list[float] | None] = [None] * n
        windows = self._windows
        sliding = self.sliding
        admitted = all_fit = True
        for i, check in enumerate(checks):
            window = check.window
            if window == -1:
                until = self._flags.get(check.key)
                used = 0.0
                fits = until is None or until <= now
                if not fits:
                    waits[i] = until - now  # type: ignore[operator]
            elif window == 0:
                held = self._live_leases(check.key, now)
                used: float = len(held)
                fits = used + check.cost <= check.limit
                if not fits:
                    waits[i] = max(min(held.values(), default=now + 1.0) - now, 0.001)
            else:
                window_id = int(now // window)
                elapsed = now - window_id * window
                entry = windows.get(check.key)
                if entry is None:
                    entry = windows[check.key] = [window_id, 0.0, 0.0, window]
                elif entry[0] != window_id:
                    entry[2] = entry[1] if entry[0] == window_id - 1 else 0.0
                    entry[1] = 0.0
                    entry[0] = window_id
                entries[i] = entry
                used = entry[2] * (window - elapsed) / window + entry[1] if sliding else entry[1]
                resets[i] = window - elapsed
                window_ids[i] = window_id
                fits = used + check.cost <= check.limit
                if not fits:
                    waits[i] = retry_after(entry[2], entry[1], elapsed, window, check.limit, check.cost, sliding)
            usage[i] = used
            if not fits:
                all_fit = False
                if not check.shadow:
                    admitted = False
        if admitted:
            for i, check in enumerate(checks):
                if all_fit or not check.shadow:
                    entry = entries[i]
                    if check.window == -1:
                        continue
                    if entry is None:
                        self._leases.setdefault(check.key, {})[lease_id] = now + lease_ttl
                    else:
                        entry[1] += check.cost
                    usage[i] += check.cost
        self._ops += 1
        if self._ops >= _SWEEP_EVERY:
            self._sweep(now)
        return Verdict(admitted, admitted, usage, waits, resets, window_ids)

    def settle(self, charges: Sequence[Charge], leases: Sequence[Lease], now: float) -> None:
        for charge in charges:
            entry = self._windows.get(charge.key)
            if entry is None or charge.delta == 0:
                continue
            # The reservation's window may have become the previous one since.
            if entry[0] == charge.window_id:
                entry[1] = max(entry[1] + charge.delta, 0.0)
            elif entry[0] == charge.window_id + 1:
                entry[2] = max(entry[2] + charge.delta, 0.0)
        for lease in leases:
            held = self._leases.get(lease.key)
            if held is not None:
                held.pop(lease.lease_id, None)
                if not held:
                    del self._leases[lease.key]

    async def usage(self, checks: Sequence[Check], now: float) -> list[float]:
        out: list[float] = []
        for check in checks:
            if check.window == -1:
                out.append(0.0)
                continue
            if check.window == 0:
                out.append(float(len(self._live_leases(check.key, now))))
                continue
            window_id = int(now // check.window)
            current, previous = self._counts(check.key, window_id, check.window)
            elapsed = now - window_id * check.window
            out.append(window_usage(previous, current, elapsed, check.window, self.sliding))
        return out

    async def set_flag(self, key: str, seconds: float, now: float) -> None:
        self._flags[key] = now + seconds

    async def clear_flag(self, key: str) -> bool:
        return self._flags.pop(key, None) is not None

    async def flag_ttl(self, key: str, now: float) -> float | None:
        until = self._flags.get(key)
        return until - now if until is not None and until > now else None

    async def clear(self, prefix: str) -> int:
        doomed = [k for k in self._windows if k.startswith(prefix)]
        doomed_leases = [k for k in self._leases if k.startswith(prefix)]
        for key in [k for k in self._flags if k.startswith(prefix)]:
            del self._flags[key]
        for key in doomed:
            del self._windows[key]
        for key in doomed_leases:
            del self._leases[key]
        return len(doomed) + len(doomed_leases)

    async def merge_windows(self, sources: Sequence[str], target: str, window: int, now: float) -> None:
        window_id = int(now // window)
        self._counts(target, window_id, window)
        into = self._windows[target]
        for key in sources:
            if key == target or key not in self._windows:
                continue
            current, previous = self._counts(key, window_id, window)
            into[1] += current
            into[2] += previous

    async def add_usage(self, entries: Sequence[tuple[str, int, int, float]]) -> None:
        for key, window, window_id, amount in entries:
            entry = self._windows.get(key)
            if entry is None:
                entry = self._windows[key] = [window_id, 0.0, 0.0, window]
            if entry[0] == window_id:
                entry[1] += amount
            elif entry[0] == window_id + 1:
                entry[2] += amount
            elif entry[0] < window_id:
                entry[2] = entry[1] if entry[0] == window_id - 1 else 0.0
                entry[0], entry[1] = window_id, amount

    def _counts(self, key: str, window_id: int, window: int) -> tuple[float, float]:
        entry = self._windows.get(key)
        if entry is None:
            self._windows[key] = [window_id, 0.0, 0.0, window]
            return 0.0, 0.0
        if entry[0] != window_id:
            entry[2] = entry[1] if entry[0] == window_id - 1 else 0.0
            entry[1] = 0.0
            entry[0] = window_id
        return entry[1], entry[2]

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
