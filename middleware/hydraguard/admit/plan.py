"""Which limits apply to a request, as storage checks with their keys and costs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..policy.compiled import CompiledPolicy, ConcurrencyLimit, LimitGroup, WindowLimit
from ..storage.base import Check

KEY_PREFIX = "hg:"
BLOCK_SUFFIX = ":b"


@dataclass(frozen=True, slots=True)
class BlockFlag:
    """An account block (admin API or an anomaly rule): refuses while it lasts."""

    rule: str = "account.block"
    scope: str = "account"
    amount: int = 1
    shadow: bool = False
    text: str = "blocked"


BLOCK = BlockFlag()
Limit = WindowLimit | ConcurrencyLimit | BlockFlag


def subject_tag(scope_letter: str, subject: str) -> str:
    """``{a:acct-1}``: a Redis Cluster hash tag, so one subject's keys share a slot.
    Ids with braces or of unusual length are hashed so they cannot break the tag."""
    if "{" in subject or "}" in subject or len(subject) > 96:
        subject = "h" + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{{{scope_letter}:{subject}}}"


def account_prefix(account: str) -> str:
    return KEY_PREFIX + subject_tag("a", account)


@dataclass(frozen=True, slots=True)
class Layout:
    """The static part of a plan for one tier: built once per policy, shared by requests."""

    limits: tuple[Limit, ...]
    kinds: tuple[str, ...]  # "requests" | "tokens" | "concurrency", per check
    token_checks: tuple[int, ...]  # settled after the response
    lease_checks: tuple[int, ...]  # released after the response
    # per check: (is_account_scoped, key suffix, amount, window, is_tokens, shadow)
    specs: tuple[tuple[bool, str, int, int, bool, bool], ...]


@dataclass(slots=True)
class Plan:
    layout: Layout
    checks: list[Check]

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.layout.limits

    @property
    def token_checks(self) -> tuple[int, ...]:
        return self.layout.token_checks

    @property
    def lease_checks(self) -> tuple[int, ...]:
        return self.layout.lease_checks


def _layout(groups: list[tuple[bool, LimitGroup]]) -> Layout:
    limits: list[Limit] = [BLOCK]
    kinds: list[str] = ["block"]
    specs: list[tuple[bool, str, int, int, bool, bool]] = [(True, BLOCK_SUFFIX, 1, -1, False, False)]
    used: set[tuple[bool, str]] = set()
    for account_scoped, group in groups:
        for window in group.windows:
            limits.append(window)
            kinds.append(window.kind)
            suffix = f":{window.kind[0]}{window.window}"
            if (account_scoped, suffix) in used:
                # Two rules over the same window (e.g. a tighter one tried in shadow) need
                # their own counters, or each request would be counted once per rule.
                suffix += f"~{window.amount}"
            used.add((account_scoped, suffix))
            specs.append(
                (account_scoped, suffix, window.amount, window.window,
                 window.kind == "tokens", window.shadow)
            )
        if group.concurrency is not None:
            limits.append(group.concurrency)
            kinds.append("concurrency")
            specs.append((account_scoped, ":c", group.concurrency.amount, 0, False, group.concurrency.shadow))
    return Layout(
        limits=tuple(limits),
        kinds=tuple(kinds),
        token_checks=tuple(i for i, kind in enumerate(kinds) if kind == "tokens"),
        lease_checks=tuple(i for i, kind in enumerate(kinds) if kind == "concurrency"),
        specs=tuple(specs),
    )


class Planner:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.layouts = {
            name: _layout([(True, tier.limits), (False, policy.global_limits)])
            for name, tier in policy.tiers.items()
        }
        self.global_prefix = KEY_PREFIX + "{g}"

    def plan(self, account: str, tier: str, tokens: int) -> Plan:
        layout = self.layouts[tier]
        own = account_prefix(account)
        shared = self.global_prefix
        checks = [
            Check((own if scoped else shared) + suffix, amount, window, tokens if is_tokens else 1, shadow)
            for scoped, suffix, amount, window, is_tokens, shadow in layout.specs
        ]
        return Plan(layout, checks)
