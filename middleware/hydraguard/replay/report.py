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
from .timeline import Timeline

NOT_DEGRADING = frozenset({"flag"})  # actions that only record


def degrading(action: str) -> bool:
    return action not in NOT_DEGRADING and not action.startswith("shadow")


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


class _Group:
    """Counts for a class or a campaign."""

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
        self.accounts: set[str] = set()
        self.affected: set[str] = set()
        self.first_ts: float | None = None
        self.first_action: float | None = None

    def add(self, outcome: Outcome, affected: bool, acted: bool) -> None:
        account = outcome.account or ""
        self.requests += 1
        self.refused += not outcome.admitted
        self.requested += outcome.requested
        self.served += outcome.output_tokens
        self.accounts.add(account)
        if affected:
            self.affected.add(account)
        if self.first_ts is None:
            self.first_ts = outcome.ts
        if acted and self.first_action is None:
            self.first_action = outcome.ts

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_refused": self.refused,
            "requests_refused_share": _share(self.refused, self.requests),
            "active_accounts": len(self.accounts),
            "accounts_affected": len(self.affected),
            "accounts_affected_share": _share(len(self.affected), len(self.accounts)),
            "output_tokens_requested": self.requested,
            "output_tokens_served": self.served,
            "output_tokens_served_share": _share(self.served, self.requested),
        }


class Tally:
    """Folds outcomes, one at a time, into the report (memory grows per account, not per line)."""

    def __init__(self, labels: dict[str, Label] | None = None) -> None:
        self.labels = labels
        self.lines = self.invalid = self.admitted = self.refused = 0
        self.unrouted = self.shadow_denied = self.with_actions = 0
        self.requested = self.served = 0
        self.by_rule: Counter[str] = Counter()
        self.by_action: Counter[str] = Counter()
        self.by_shadow_action: Counter[str] = Counter()
        self.invalid_lines: list[dict[str, Any]] = []
        # account -> [requests, refused, acted]
        self.accounts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.clusters: dict[str, list[Any]] = {}  # cluster -> [requests, refused, acted, accounts]
        self.classes: dict[str, _Group] = defaultdict(_Group)
        self.campaigns: dict[str, _Group] = defaultdict(_Group)
        self.timeline = Timeline()

    def add(self, outcome: Outcome) -> None:
        self.lines += 1
        if outcome.error is not None:
            self.invalid += 1
            if len(self.invalid_lines) < 100:
                self.invalid_lines.append({"line": outcome.line, "error": outcome.error})
            return
        account = outcome.account or ""
        admitted = outcome.admitted
        self.admitted += admitted
        self.refused += not admitted
        self.unrouted += not outcome.routed
        self.shadow_denied += outcome.shadow_denied
        self.requested += outcome.requested
        self.served += outcome.output_tokens
        if outcome.rule is not None:
            self.by_rule[outcome.rule] += 1
        affected = not admitted
        for action in outcome.actions:
            self.by_action[action] += 1
            affected = affected or degrading(action)
        for action in outcome.shadow_actions:
            self.by_shadow_action[action] += 1
        acted = not admitted or bool(outcome.actions)
        self.with_actions += bool(outcome.actions)
        counts = self.accounts[account]
        counts[0] += 1
        counts[1] += not admitted
        counts[2] += acted
        if outcome.cluster is not None:
            cluster = self.clusters.get(outcome.cluster)
            if cluster is None:
                cluster = self.clusters[outcome.cluster] = [0, 0, 0, set()]
            cluster[0] += 1
            cluster[1] += not admitted
            cluster[2] += acted
            cluster[3].add(account)
        label = self.labels.get(account) if self.labels is not None else None
        klass = (
            label.klass
            if label is not None
            else ("unlabelled" if self.labels is not None else "all")
        )
        self.classes[klass].add(outcome, affected, acted)
        if label is not None and label.campaign is not None:
            self.campaigns[label.campaign].add(outcome, affected, acted)
        self.timeline.add(klass, outcome.ts, outcome.output_tokens, outcome.requested)

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
                "output_tokens_requested": self.requested,
                "output_tokens_served": self.served,
                "by_rule": dict(sorted(self.by_rule.items())),
                "by_action": dict(sorted(self.by_action.items())),
                "by_shadow_action": dict(sorted(self.by_shadow_action.items())),
            },
            "invalid_lines": self.invalid_lines,
        }
        if self.labels is not None:
            report["efficacy"] = self._efficacy()
            report["classes"] = {k: self.classes[k].summary() for k in sorted(self.classes)}
            report["campaigns"] = self._campaigns()
        report["top"] = self._top(top)
        report["timeline"] = self.timeline.summary()
        return report

    def _efficacy(self) -> dict[str, Any]:
        attacker, benign = (
            self.classes.get("attacker", _Group()),
            self.classes.get("benign", _Group()),
        )
        assert self.labels is not None
        return {
            "leak": _share(attacker.served, attacker.requested),
            "attacker_output_tokens_requested": attacker.requested,
            "attacker_output_tokens_served": attacker.served,
            "benign_accounts": len(benign.accounts),
            "benign_accounts_labelled": sum(1 for v in self.labels.values() if v.klass == "benign"),
            "benign_accounts_affected": len(benign.affected),
            "benign_accounts_affected_share": _share(len(benign.affected), len(benign.accounts)),
            "benign_requests": benign.requests,
            "benign_requests_refused": benign.refused,
            "benign_requests_refused_share": _share(benign.refused, benign.requests),
        }

    def _campaigns(self) -> dict[str, Any]:
        assert self.labels is not None
        kinds = {v.campaign: v.kind for v in self.labels.values() if v.campaign is not None}
        sizes = Counter(v.campaign for v in self.labels.values() if v.campaign is not None)
        found: dict[str, Any] = {}
        for name in sorted(self.campaigns):
            group = self.campaigns[name]
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
