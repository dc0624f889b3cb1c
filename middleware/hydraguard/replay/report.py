"""The replay report: what a policy did to the traffic, and with labels, how well.

- leak: attacker output tokens served / requested (requested = the logged output of
  attacker requests, served = what the decisions let through);
- benign accounts affected: any refusal or degrading action (every action but
  ``flag`` and shadow ones) / benign accounts active in the traffic;
- time to first action per campaign: the first refusal or action on any of its
  accounts, minus the campaign's first request.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .engine import Outcome
from .labels import Label
from .timeline import MINUTE, Timeline

NOT_DEGRADING = frozenset({"flag"})  # actions that only record


def degrading(action: str) -> bool:
    return action not in NOT_DEGRADING and not action.startswith("shadow")


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


class _Group:
    """Counts for a class or a campaign, summed from its accounts' counts at report time."""

    __slots__ = (
        "accounts",
        "affected",
        "first_action",
        "first_ts",
        "refused",
        "requested",
        "requests",
        "served",
    )

    def __init__(self) -> None:
        self.requests = self.refused = self.requested = self.served = 0
        self.accounts = self.affected = 0
        self.first_ts: float | None = None
        self.first_action: float | None = None

    def add(self, counts: list[Any]) -> None:
        """One account's counts; accounts come in order of first appearance, so the first
        one seen holds the group's first request."""
        self.requests += counts[_REQUESTS]
        self.refused += counts[_REFUSED]
        self.requested += counts[_REQUESTED]
        self.served += counts[_SERVED]
        self.accounts += 1
        self.affected += counts[_AFFECTED]
        if self.first_ts is None:
            self.first_ts = counts[_FIRST_TS]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_refused": self.refused,
            "requests_refused_share": _share(self.refused, self.requests),
            "active_accounts": self.accounts,
            "accounts_affected": self.affected,
            "accounts_affected_share": _share(self.affected, self.accounts),
            "output_tokens_requested": self.requested,
            "output_tokens_served": self.served,
            "output_tokens_served_share": _share(self.served, self.requested),
        }


# Per-account counts, a plain list indexed by these (cheaper per line than an object):
_REQUESTS, _REFUSED, _ACTED, _AFFECTED, _REQUESTED, _SERVED = range(6)
# ... the first request's time, the first action's time and its rank among accounts'
# first actions (campaign time to first action), the label and class, and the class's
# timeline minutes (kept per account, so that a line finds them with one lookup).
_FIRST_TS, _ACTION_TS, _ACTION_RANK, _LABEL, _KLASS, _MINUTES = range(6, 12)


class Tally:
    """Folds outcomes, one at a time, into the report (memory grows per account, not per line).

    Everything per class and per campaign is a function of the account, so lines are only
    counted per account and summed into classes and campaigns when the report is made."""

    def __init__(self, labels: dict[str, Label] | None = None) -> None:
        self.labels = labels
        self.invalid = self.unrouted = self.shadow_denied = self.with_actions = 0
        self.by_rule: Counter[str] = Counter()
        self.by_action: Counter[str] = Counter()
        self.by_shadow_action: Counter[str] = Counter()
        self.invalid_lines: list[dict[str, Any]] = []
        self.accounts: dict[str, list[Any]] = {}  # in order of first appearance
        self.clusters: dict[str, list[Any]] = {}  # cluster -> [requests, refused, acted, accounts]
        self.timeline = Timeline()
        self._first_actions = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.add_invalid(outcome.line, outcome.error)
            return
        self.count(
            outcome.account or "", outcome.cluster, outcome.admitted, outcome.output_tokens,
            outcome.actions, outcome.rule, outcome.ts, outcome.requested, outcome.shadow_denied,
            outcome.routed, outcome.shadow_actions,
        )  # fmt: skip

    def add_invalid(self, line: int, error: str, source: str | None = None) -> None:
        """A malformed line; ``source`` (``path:line``) when several logs were merged."""
        self.invalid += 1
        if len(self.invalid_lines) < 100:
            entry: dict[str, Any] = {"line": line, "error": error}
            if source is not None:
                entry["source"] = source
            self.invalid_lines.append(entry)

    def count(
        self,
        account: str,
        cluster: str | None,
        admitted: bool,
        served: int,
        actions: tuple[str, ...],
        rule: str | None,
        ts: float,
        requested: int,
        shadow_denied: bool,
        routed: bool,
        shadow_actions: tuple[str, ...],
    ) -> None:
        """One valid line. Hand-tuned: runs once per logged request, so the common case
        (admitted, no action) only adds to its account's list, its cluster and the timeline."""
        counts = self.accounts.get(account)
        if counts is None:
            counts = self._new_account(account, ts)
        counts[_REQUESTS] += 1
        counts[_REQUESTED] += requested
        counts[_SERVED] += served
        acted = not admitted or bool(actions)
        if acted:
            counts[_ACTED] += 1
            affected = not admitted
            counts[_REFUSED] += affected
            if actions:
                self.with_actions += 1
                by_action = self.by_action
                for action in actions:
                    by_action[action] += 1
                    affected = affected or degrading(action)
            if affected:
                counts[_AFFECTED] = 1
            if counts[_ACTION_TS] is None:
                counts[_ACTION_TS] = ts
                counts[_ACTION_RANK] = self._first_actions
                self._first_actions += 1
        if rule is not None:
            self.by_rule[rule] += 1
        if not routed:
            self.unrouted += 1
        if shadow_denied:
            self.shadow_denied += 1
        for action in shadow_actions:
            self.by_shadow_action[action] += 1
        if cluster is not None:
            group = self.clusters.get(cluster)
            if group is None:
                group = self.clusters[cluster] = [0, 0, 0, set()]
            group[0] += 1
            group[1] += not admitted
            group[2] += acted
            group[3].add(account)
        minutes = counts[_MINUTES]  # Timeline.series(klass): minute -> [served, withheld]
        minute = int(ts // MINUTE)
        point = minutes.get(minute)
        if point is None:
            minutes[minute] = [served, requested - served]
        else:
            point[0] += served
            point[1] += requested - served

    def _new_account(self, account: str, ts: float) -> list[Any]:
        label = self.labels.get(account) if self.labels is not None else None
        klass = (
            label.klass
            if label is not None
            else ("unlabelled" if self.labels is not None else "all")
        )
        counts = [0, 0, 0, 0, 0, 0, ts, None, None, label, klass, self.timeline.series(klass)]
        self.accounts[account] = counts
        return counts

    def _total(self, index: int) -> int:
        return sum(counts[index] for counts in self.accounts.values())

    @property
    def lines(self) -> int:
        return self.invalid + self._total(_REQUESTS)

    @property
    def refused(self) -> int:
        return self._total(_REFUSED)

    @property
    def admitted(self) -> int:
        return self._total(_REQUESTS) - self.refused

    def _groups(self) -> tuple[dict[str, _Group], dict[str, _Group]]:
        """Per class and per campaign counts, from the accounts' (in first-seen order)."""
        classes: dict[str, _Group] = defaultdict(_Group)
        campaigns: dict[str, _Group] = defaultdict(_Group)
        first_rank: dict[str, int] = {}
        for counts in self.accounts.values():
            label = counts[_LABEL]
            classes[counts[_KLASS]].add(counts)
            if label is None or label.campaign is None:
                continue
            group = campaigns[label.campaign]
            group.add(counts)
            rank = counts[_ACTION_RANK]
            if rank is not None and rank < first_rank.get(label.campaign, rank + 1):
                first_rank[label.campaign] = rank
                group.first_action = counts[_ACTION_TS]
        return classes, campaigns

    def report(self, top: int = 20) -> dict[str, Any]:
        report: dict[str, Any] = {
            "totals": {
                "lines": self.lines,
                "invalid": self.invalid,
                "admitted": self.admitted,
                "refused": self.refused,
                "unrouted": self.unrouted,
                "shadow_denied": self.shadow_denied,
                "with_actions": self.with_actions,
                "output_tokens_requested": self._total(_REQUESTED),
                "output_tokens_served": self._total(_SERVED),
                "by_rule": dict(sorted(self.by_rule.items())),
                "by_action": dict(sorted(self.by_action.items())),
                "by_shadow_action": dict(sorted(self.by_shadow_action.items())),
            },
            "invalid_lines": self.invalid_lines,
        }
        if self.labels is not None:
            classes, campaigns = self._groups()
            report["efficacy"] = self._efficacy(classes)
            report["classes"] = {k: classes[k].summary() for k in sorted(classes)}
            report["campaigns"] = self._campaigns(campaigns)
        report["top"] = self._top(top)
        report["timeline"] = self.timeline.summary()
        return report

    def _efficacy(self, classes: dict[str, _Group]) -> dict[str, Any]:
        attacker, benign = classes.get("attacker", _Group()), classes.get("benign", _Group())
        assert self.labels is not None
        return {
            "leak": _share(attacker.served, attacker.requested),
            "attacker_output_tokens_requested": attacker.requested,
            "attacker_output_tokens_served": attacker.served,
            "benign_accounts": benign.accounts,
            "benign_accounts_labelled": sum(1 for v in self.labels.values() if v.klass == "benign"),
            "benign_accounts_affected": benign.affected,
            "benign_accounts_affected_share": _share(benign.affected, benign.accounts),
            "benign_requests": benign.requests,
            "benign_requests_refused": benign.refused,
            "benign_requests_refused_share": _share(benign.refused, benign.requests),
        }

    def _campaigns(self, campaigns: dict[str, _Group]) -> dict[str, Any]:
        assert self.labels is not None
        kinds = {v.campaign: v.kind for v in self.labels.values() if v.campaign is not None}
        sizes = Counter(v.campaign for v in self.labels.values() if v.campaign is not None)
        found: dict[str, Any] = {}
        for name in sorted(campaigns):
            group = campaigns[name]
            first = group.first_ts
            acted = group.first_action
            found[name] = {
                "kind": kinds.get(name),
                "accounts": sizes[name],
                **group.summary(),
                "first_ts": first,
                "first_action_ts": acted,
                "time_to_first_action": round(acted - first, 3)
                if acted is not None and first is not None
                else None,
            }
        return found

    def _top(self, top: int) -> dict[str, Any]:
        accounts = sorted(
            (item for item in self.accounts.items() if item[1][2]),
            key=lambda item: (-item[1][2], item[0]),
        )[:top]
        clusters = sorted(
            (item for item in self.clusters.items() if item[1][2]),
            key=lambda item: (-item[1][2], item[0]),
        )[:top]
        labels = self.labels or {}
        return {
            "accounts": [
                {
                    "account": name,
                    "class": labels[name].klass if name in labels else None,
                    "requests": c[0],
                    "refused": c[1],
                    "acted": c[2],
                }
                for name, c in accounts
            ],
            "clusters": [
                {
                    "cluster": name,
                    "accounts": len(c[3]),
                    "requests": c[0],
                    "refused": c[1],
                    "acted": c[2],
                }
                for name, c in clusters
            ],
        }
