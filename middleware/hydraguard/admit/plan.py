"""Which limits apply to a request, as storage checks with their keys and costs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..policy.compiled import CompiledPolicy, ConcurrencyLimit, LimitGroup, WindowLimit
from ..storage.base import Check

KEY_PREFIX = "hg:"
Limit = WindowLimit | ConcurrencyLimit


def subject_tag(scope_letter: str, subject: str) -> str:
    """``{a:acct-1}``: a Redis Cluster hash tag, so one subject's keys share a slot.
    Ids with braces or of unusual length are hashed so they cannot break the tag."""
    if "{" in subject or "}" in subject or len(subject) > 96:
        subject = "h" + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{{{scope_letter}:{subject}}}"


def account_prefix(account: str) -> str:
    return KEY_PREFIX + subject_tag("a", account)


@dataclass(slots=True)
class Plan:
    limits: list[Limit]
    checks: list[Check]
    token_checks: list[int]  # indexes of token checks (settled after the response)
    lease_checks: list[int]  # indexes of concurrency checks (released after the response)


class Planner:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.tiers = {
            name: self._compile(tier.limits) for name, tier in policy.tiers.items()
        }
        self.global_ = self._compile(policy.global_limits)
        self.global_prefix = KEY_PREFIX + "{g}"

    @staticmethod
    def _compile(group: LimitGroup) -> list[tuple[Limit, str]]:
        out: list[tuple[Limit, str]] = []
        for limit in group.windows:
            out.append((limit, f":{limit.kind[0]}{limit.window}"))
        if group.concurrency is not None:
            out.append((group.concurrency, ":c"))
        return out

    def plan(self, account: str, tier: str, tokens: int) -> Plan:
        limits: list[Limit] = []
        checks: list[Check] = []
        token_checks: list[int] = []
        lease_checks: list[int] = []
        for prefix, entries in ((account_prefix(account), self.tiers[tier]), (self.global_prefix, self.global_)):
            for limit, suffix in entries:
                if isinstance(limit, WindowLimit):
                    if limit.kind == "tokens":
                        token_checks.append(len(checks))
                        cost = tokens
                    else:
                        cost = 1
                    checks.append(Check(prefix + suffix, limit.amount, limit.window, cost, limit.shadow))
                else:
                    lease_checks.append(len(checks))
                    checks.append(Check(prefix + suffix, limit.amount, 0, 1, limit.shadow))
                limits.append(limit)
        return Plan(limits, checks, token_checks, lease_checks)
