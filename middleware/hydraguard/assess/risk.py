"""The risk engine: detector states per account and cluster, a decaying risk, rules with hysteresis.

``observe(event)`` feeds one request to the account's and the cluster's
detector states and refreshes their risk: the combined detector score
(noisy-OR or weighted mean), held at its peak and decaying with the
configured half-life when the evidence stops. ``assess(account, cluster,
now)`` reads both risks at ``now``, derives the effective risk

    effective = account + cluster_influence * max(0, cluster - account)

and evaluates the rules. A rule starts at its threshold and stops only below
threshold - hysteresis, so a risk wobbling around a threshold does not flap;
a block lasts ``seconds`` after the last assessment that triggered it.

Deterministic: the clock is ``event.ts`` and ``now``, never the wall clock,
so replay runs logged traffic through it as fast as the CPU allows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.detectors import Scope, build_detectors
from hydraguard.assess.events import RequestEvent
from hydraguard.assess.rules import Action, CompiledRule, combine, compile_rules


# Not frozen: one is built per request, and a frozen dataclass's __init__ sets every field
# through object.__setattr__, which made it cost about three times as much.
@dataclass(slots=True)
class Assessment:
    risk: float  # effective risk of the account, 0..1
    account_risk: float
    cluster_risk: float
    actions: tuple[Action, ...] = ()
    rule: str | None = None  # the enforced rule that decided, if any
    top_detectors: tuple[str, ...] = ()  # the <= 3 detectors that contributed most


class Subject:
    """Everything remembered about one account or one cluster."""

    __slots__ = (
        "active",
        "blocks",
        "contributions",
        "pardoned",
        "pending",
        "risk",
        "states",
        "ts",
    )

    def __init__(self, states: list[Any]) -> None:
        self.states = states
        self.risk = 0.0
        self.ts = 0.0  # when ``risk`` was last set
        self.contributions: tuple[float, ...] = ()  # weight * score per detector at the peak
        self.active = 0  # bit mask of the rules in force (hysteresis)
        self.blocks: dict[str, float] = {}  # block rule -> until
        self.pending = 0  # observations since the detectors were last scored
        self.pardoned = 0.0  # when an operator last unblocked it: older shared risk is stale


class RiskEngine:
    def __init__(self, config: AnomalyConfig, *, mode: str | None = None) -> None:
        self.config = config
        self.enabled = config.enabled
        self.detectors = build_detectors(config)
        self.names = tuple(det.name for det, _ in self.detectors["account"])
        self.rules: tuple[CompiledRule, ...] = compile_rules(config, mode)
        self.half_life = config.risk.half_life
        self.hysteresis = config.risk.hysteresis
        self.influence = config.risk.cluster_influence
        self.noisy_or = config.risk.combination == "noisy_or"
        self.total_weight = sum(w for _, w in self.detectors["account"]) or 1.0
        self.rescore_every = config.risk.rescore_every
        # Bound methods, looked up once: the observe loop runs for every request.
        self.observers = {s: tuple(d.observe for d, _ in ds) for s, ds in self.detectors.items()}
        self.content_observers = {
            s: tuple((i, d.observe) for i, (d, _) in enumerate(ds) if not d.arrival)
            for s, ds in self.detectors.items()
        }
        self.scorers = {s: tuple((d.score, w) for d, w in ds) for s, ds in self.detectors.items()}
        # Below this nothing can trigger: assess() skips the rules.
        self.floor = min((r.threshold for r in self.rules), default=2.0) - self.hysteresis
        # Block rules on one scope's own risk start when a rescore crosses their threshold
        # (``_observe``), not at the subject's next request: see ``_start_blocks``.
        self.block_rules: dict[Scope, tuple[CompiledRule, ...]] = {
            scope: tuple(r for r in self.rules if r.level == scope and r.action.kind == "block")
            for scope in ("account", "cluster")
        }
        self.max_subjects = config.max_subjects
        self.subjects: dict[Scope, OrderedDict[str, Subject]] = {
            "account": OrderedDict(),
            "cluster": OrderedDict(),
        }

    # -- observe ------------------------------------------------------------

    def observe(self, event: RequestEvent, entries: tuple[RequestEvent, ...] = ()) -> None:
        """Feed one request (ideally once complete, with ``output_tokens``) to its subjects.

        ``entries``: a batch's other entries (a sample), which the detectors of what a
        request asks read as requests of their own; the detectors of when requests arrive
        see the batch once, as ``event``.
        """
        if not self.enabled:
            return
        self._observe("account", event.account, event, entries)
        if event.cluster is not None:
            self._observe("cluster", event.cluster, event, entries)

    def _observe(
        self, scope: Scope, key: str, event: RequestEvent, entries: tuple[RequestEvent, ...]
    ) -> None:
        subject = self._subject(scope, key)
        states = subject.states
        for observe, state in zip(self.observers[scope], states, strict=True):
            observe(state, event)
        for entry in entries:
            for i, observe_content in self.content_observers[scope]:
                observe_content(states[i], entry)
        subject.pending += 1
        if subject.pending < self.rescore_every:
            return
        subject.pending = 0
        ts = event.ts
        # A list comprehension, not tuple(<generator>): resuming a generator per detector
        # cost more than the scores themselves.
        parts = tuple(
            [
                weight * score(state, ts)
                for (score, weight), state in zip(self.scorers[scope], states, strict=True)
            ]
        )
        if self.noisy_or:
            keep = 1.0
            for part in parts:
                keep *= 1.0 - part
            instant = 1.0 - keep
        else:
            instant = sum(parts) / self.total_weight
        held = self._decayed(subject, ts)
        if instant >= held:
            subject.risk, subject.contributions = instant, parts
            if self.block_rules[scope]:
                self._start_blocks(scope, subject, instant, ts)
        else:
            subject.risk = held
        if ts > subject.ts:
            subject.ts = ts

    def _start_blocks(self, scope: Scope, subject: Subject, risk: float, ts: float) -> None:
        """A block rule whose threshold the fresh score reaches starts now.

        Rules are otherwise evaluated when the subject's next request is assessed, on the
        risk decayed since this rescore. A subject sending one request every ~11 minutes or
        less often (a light hydra account, or a card cluster of a dozen of them: 10 an hour in
        the simulated diluted campaign) saw the distillation signature's 0.78 decay below
        the 0.6 of a block before every next request (half-life 30 minutes), so it was never
        blocked however strong the evidence; a busier subject was. How often a subject
        sends must not decide whether its evidence counts.
        """
        for rule in self.block_rules[scope]:
            if risk >= rule.threshold:
                self._in_force(rule, risk, subject, ts)

    def _subject(self, scope: Scope, key: str) -> Subject:
        subjects = self.subjects[scope]
        subject = subjects.get(key)
        if subject is None:
            subject = Subject(self._fresh_states(scope))
            subjects[key] = subject
            if len(subjects) > self.max_subjects:
                subjects.popitem(last=False)
        else:
            subjects.move_to_end(key)
        return subject

    def _fresh_states(self, scope: Scope) -> list[Any]:
        """Every detector's state for a subject with no evidence yet."""
        return [det.new_state() for det, _ in self.detectors[scope]]

    def _decayed(self, subject: Subject | None, now: float) -> float:
        if subject is None or not subject.risk:
            return 0.0
        if now <= subject.ts:
            return subject.risk
        return subject.risk * 0.5 ** ((now - subject.ts) / self.half_life)

    # -- assess -------------------------------------------------------------

    def risk(self, scope: Scope, key: str, now: float) -> float:
        """The risk of one account or cluster at ``now`` (0 when unknown)."""
        return self._decayed(self.subjects[scope].get(key), now)

    def blocked_until(self, scope: Scope, key: str, now: float) -> float:
        """When the subject's own anomaly blocks end (0 when none is in force at ``now``)."""
        subject = self.subjects[scope].get(key)
        until = max(subject.blocks.values(), default=0.0) if subject is not None else 0.0
        return until if until > now else 0.0

    def assess(self, account: str, cluster: str | None, now: float) -> Assessment:
        """Risks at ``now`` and the actions the rules call for."""
        acct = self.subjects["account"].get(account)
        clus = self.subjects["cluster"].get(cluster) if cluster is not None else None
        a = self._decayed(acct, now)
        c = self._decayed(clus, now)
        effective = a + self.influence * (c - a) if c > a else a
        quiet = effective < self.floor and a < self.floor and c < self.floor
        if (
            quiet
            and not (acct and (acct.active or acct.blocks))
            and not (clus and (clus.active or clus.blocks))
        ):
            return Assessment(effective, a, c)
        triggered: list[Action] = []
        for rule in self.rules:
            if rule.level == "cluster":
                if cluster is None:
                    continue
                value, holder = c, clus
                if holder is None:
                    holder = clus = self._subject("cluster", cluster)
            else:
                value, holder = (a if rule.level == "account" else effective), acct
                if holder is None:
                    holder = acct = self._subject("account", account)
            if self._in_force(rule, value, holder, now):
                triggered.append(rule.action)
        actions, deciding = combine(triggered)
        return Assessment(effective, a, c, actions, deciding, self._top(acct, clus, a, c))

    def _in_force(self, rule: CompiledRule, value: float, holder: Subject, now: float) -> bool:
        was = bool(holder.active & rule.bit)
        on = value >= rule.threshold or (was and value >= rule.threshold - self.hysteresis)
        if on != was:
            holder.active ^= rule.bit
        seconds = rule.action.seconds
        if rule.action.kind != "block" or seconds is None:
            return on
        if on:
            holder.blocks[rule.name] = max(holder.blocks.get(rule.name, 0.0), now + seconds)
            return True
        until = holder.blocks.get(rule.name)
        if until is not None and until <= now:
            del holder.blocks[rule.name]
            # The risk decayed while blocked (refused requests teach nothing), but the
            # detectors still hold the evidence that blocked it: score it again on the next
            # request instead of up to rescore_every requests later. Otherwise each lapse let
            # every blocked cluster of a hydra through for rescore_every requests (the
            # simulated diluted campaign: 125 clusters, ~4 requests each, every 4 hours).
            holder.pending = max(holder.pending, self.rescore_every - 1)
            return False
        return until is not None

    def _top(
        self, acct: Subject | None, clus: Subject | None, a: float, c: float
    ) -> tuple[str, ...]:
        parts = dict.fromkeys(self.names, 0.0)
        if acct is not None and acct.contributions:
            parts.update(zip(self.names, acct.contributions, strict=True))
        if clus is not None and clus.contributions and c > a:
            for name, part in zip(self.names, clus.contributions, strict=True):
                parts[name] = max(parts[name], self.influence * part)
        ranked = sorted((p, name) for name, p in parts.items() if p > 0.0)
        return tuple(name for _, name in reversed(ranked[-3:]))

    def absorb(
        self,
        scope: Scope,
        key: str,
        risk: float,
        ts: float,
        contributions: tuple[float, ...],
        now: float,
    ) -> None:
        """Another replica's risk for one subject (``RiskSharing``): kept when it is the
        higher one at ``now``; the subject's detector states stay this process's own."""
        theirs = risk if now <= ts else risk * 0.5 ** ((now - ts) / self.half_life)
        subject = self._subject(scope, key)
        if ts < subject.pardoned or theirs <= self._decayed(subject, now):
            return
        subject.risk, subject.ts = risk, ts
        if len(contributions) == len(self.names):
            subject.contributions = contributions

    # -- admin and persistence ----------------------------------------------

    def unblock(self, scope: Scope, key: str, at: float = 0.0) -> bool:
        """An operator's unblock: the subject's anomaly blocks, rules in force, risk and the
        detector evidence behind them are cleared, so the same evidence cannot block it
        again at the next request (lifting the blocks alone did exactly that); new
        evidence counts afresh. Shared risk published before ``at`` is ignored from now on
        (``absorb``). False when there was nothing to lift."""
        subject = self.subjects[scope].get(key)
        if subject is None:
            return False
        had = bool(subject.blocks or subject.active or subject.risk)
        subject.blocks.clear()
        subject.active = 0
        subject.risk, subject.contributions, subject.pending = 0.0, (), 0
        subject.states = self._fresh_states(scope)
        subject.pardoned = max(subject.pardoned, at)
        return had

    def snapshot(self, scope: Scope, key: str) -> dict[str, Any] | None:
        """One subject as plain JSON types (for Redis or the admin API); None when unknown."""
        subject = self.subjects[scope].get(key)
        if subject is None:
            return None
        return {
            "risk": subject.risk,
            "ts": subject.ts,
            "contributions": list(subject.contributions),
            "active": [r.name for r in self.rules if subject.active & r.bit],
            "blocks": dict(subject.blocks),
            "pending": subject.pending,
            "states": {
                det.name: state.to_dict()
                for (det, _), state in zip(self.detectors[scope], subject.states, strict=True)
            },
        }

    def restore(self, scope: Scope, key: str, data: dict[str, Any]) -> None:
        """Load a subject from :meth:`snapshot` output (detectors missing from it start afresh)."""
        states = data.get("states", {})
        subject = Subject(
            [
                det.load_state(states[det.name]) if det.name in states else det.new_state()
                for det, _ in self.detectors[scope]
            ]
        )
        subject.risk = float(data.get("risk", 0.0))
        subject.ts = float(data.get("ts", 0.0))
        contributions = tuple(float(p) for p in data.get("contributions", ()))
        subject.contributions = contributions if len(contributions) == len(self.names) else ()
        active = set(data.get("active", ()))
        subject.active = sum(r.bit for r in self.rules if r.name in active)
        subject.blocks = {str(k): float(v) for k, v in data.get("blocks", {}).items()}
        subject.pending = int(data.get("pending", 0))
        subjects = self.subjects[scope]
        subjects[key] = subject
        subjects.move_to_end(key)
        if len(subjects) > self.max_subjects:
            subjects.popitem(last=False)
