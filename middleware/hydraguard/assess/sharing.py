"""Risk shared between replicas.

Each process scores the requests it sees. On shared storage (Redis) it also publishes an
account's or cluster's risk once it matters (at or above half the lowest rule threshold)
and reads back what the other replicas published, keeping whichever is higher at the
time; so a campaign spread over several gateway processes is throttled, capped and
stripped alike on all of them (blocks are shared already, as storage flags).

Both directions stay off the request path and are batched per event-loop turn: publishing
after learning; reading, a background refresh per subject at most every ``REFRESH``
seconds, whose result the next decision uses (a refresh behind, never a round trip of its
own; one read for all the decisions of a loop turn; a subject found without a shared risk
is read again after ``REFRESH_NONE`` seconds). The same read brings an operator's unblock
(admin API) made through another replica: each replica then clears its own evidence.
A replica that misses a refresh still decides on its own evidence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from ..admit.plan import BLOCK_SUFFIX, account_prefix, cluster_prefix
from ..background import Background
from ..storage.base import Storage
from .detectors import Scope
from .risk import RiskEngine

log = logging.getLogger("hydraguard")

REFRESH = 5.0  # seconds between two reads of one subject's shared risk
REFRESH_NONE = 30.0  # ... when the last read found none (most subjects: never published)
STEP = 0.02  # publish again once the risk has moved this much
_KEPT = 100_000  # subjects remembered per table; cleared whole when full
_SUFFIX = ":risk"  # next to the subject's counters: same Redis Cluster slot, same reset
_PARDON = ":pardon"  # when an operator unblocked the subject (admin API), for every replica


class RiskSharing:
    def __init__(
        self,
        risk: RiskEngine,
        storage: Storage,
        on_error: Callable[[], None] = lambda: None,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self.risk = risk
        self.storage = storage
        self.on_error = on_error
        self.available = available  # False while the storage's circuit breaker is open
        self.floor = max(risk.floor, 0.0) / 2
        # Long enough for any shared risk to decay to a sixteenth: below every rule by then.
        self.ttl = max(60.0, 4 * risk.half_life)
        self._read: dict[str, float] = {}  # key -> when to read it again
        self._published: dict[str, float] = {}  # key -> the risk last published
        self._outbox: dict[str, bytes] = {}
        self._wanted: list[tuple[Scope, str, str]] = []  # to read in the next batch
        self._wanted_at = 0.0
        self._tasks = Background()

    @staticmethod
    def key(scope: Scope, subject: str, suffix: str = _SUFFIX) -> str:
        prefix = account_prefix(subject) if scope == "account" else cluster_prefix(subject)
        return prefix + suffix

    # -- pardon (an operator's unblock) -------------------------------------------

    async def pardon(self, scope: Scope, name: str, now: float) -> None:
        """Tell every replica the subject was unblocked at ``now``: each clears its own
        evidence at its next read (``REFRESH``), and the shared risk is reset to zero, so
        no replica takes the old risk back from storage."""
        key = self.key(scope, name)
        self._published.pop(key, None)
        await self.storage.put_values(
            [
                (key, orjson.dumps({"risk": 0.0, "ts": now, "parts": []}), self.ttl),
                (self.key(scope, name, _PARDON), orjson.dumps(now), self.ttl),
            ]
        )

    # -- publish (after learning) ---------------------------------------------

    def learned(self, account: str, cluster: str | None) -> None:
        """After ``RiskEngine.observe``: queue the subjects whose risk is worth sharing."""
        self._offer("account", account)
        if cluster is not None:
            self._offer("cluster", cluster)

    def _offer(self, scope: Scope, name: str) -> None:
        subject = self.risk.subjects[scope].get(name)
        if subject is None or subject.risk < self.floor:
            return
        key = self.key(scope, name)
        last = self._published.get(key)
        if last is not None and abs(last - subject.risk) < STEP:
            return
        if len(self._published) >= _KEPT:
            self._published.clear()
        self._published[key] = subject.risk
        self._outbox[key] = orjson.dumps(
            {"risk": subject.risk, "ts": subject.ts, "parts": subject.contributions}
        )
        if len(self._outbox) == 1:
            self._spawn(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop turn's lessons join the batch
        outbox, self._outbox = self._outbox, {}
        await self.storage.put_values([(k, v, self.ttl) for k, v in outbox.items()])

    # -- read (before a decision) ---------------------------------------------

    def refresh(self, account: str, cluster: str | None, now: float) -> None:
        """Read the subjects' shared risk in the background if not read for ``REFRESH`` s."""
        subjects: list[tuple[Scope, str]] = [("account", account)]
        if cluster is not None:
            subjects.append(("cluster", cluster))
        wanted: list[tuple[Scope, str, str]] = []
        for scope, name in subjects:
            key = self.key(scope, name)
            due = self._read.get(key)
            if due is None or now >= due or due - now > REFRESH_NONE:  # last: clock went back
                if len(self._read) >= _KEPT:
                    self._read.clear()
                self._read[key] = now + REFRESH
                wanted.append((scope, name, key))
        if wanted:
            if not self._wanted:
                self._spawn(self._fetch())
            self._wanted.extend(wanted)
            self._wanted_at = now

    async def _fetch(self) -> None:
        await asyncio.sleep(0)  # one read for every decision of this loop turn
        wanted, self._wanted = self._wanted, []
        now = self._wanted_at
        keys = [key for _, _, key in wanted]
        keys += [self.key(scope, name, _PARDON) for scope, name, _ in wanted]
        values = await self.storage.get_values(keys)
        pardons = values[len(wanted) :]
        for (scope, name, key), raw, pardon in zip(wanted, values, pardons, strict=False):
            if pardon is not None:
                await self._heard_pardon(scope, name, pardon, now)
            if raw is None:
                self._read[key] = now + REFRESH_NONE
                continue
            try:
                data: Any = orjson.loads(raw)
                risk, ts = float(data["risk"]), float(data["ts"])
                parts = tuple(float(p) for p in data.get("parts", ()))
            except (ValueError, KeyError, TypeError):
                log.warning("hydraguard: ignoring a malformed shared risk for one %s", scope)
                continue
            self.risk.absorb(scope, name, risk, ts, parts, now)

    async def _heard_pardon(self, scope: Scope, name: str, raw: bytes, now: float) -> None:
        """Another replica's operator unblock: clear this one's evidence, and the block flag
        this replica may have set again on it meanwhile (once per unblock)."""
        try:
            at = float(orjson.loads(raw))
        except (ValueError, TypeError):
            return
        subject = self.risk.subjects[scope].get(name)
        if subject is None or at <= subject.pardoned:
            return
        if self.risk.unblock(scope, name, at) and scope == "account":
            await self.storage.clear_flag(account_prefix(name) + BLOCK_SUFFIX, now)

    # -- background -------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        async def run() -> None:
            try:
                if self.available():  # a dead Redis is not asked again and again
                    await work
                    return
            except Exception as exc:  # sharing is best effort: each replica still decides
                self.on_error()
                # The breaker reports the outage itself; one line per failed batch is noise.
                log.debug("hydraguard: sharing risk failed: %r", exc)
            else:
                work.close()  # never started: the breaker is open
            # Not done: what was queued is dropped, and published again once it changes.
            self._outbox.clear()
            self._wanted.clear()
            self._published.clear()

        self._tasks.spawn(run())

    async def drain(self) -> None:
        await self._tasks.drain()
