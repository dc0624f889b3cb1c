"""Which limits apply to a request, as storage checks with their keys and costs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..policy.compiled import CompiledPolicy, ConcurrencyLimit, LimitGroup, WindowLimit
from ..storage.base import Check, CheckShape, KeyLayout

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
    kinds: tuple[str, ...]  # "block" | "requests" | "tokens" | "concurrency", per check
    token_checks: tuple[int, ...]  # settled after the response
    lease_checks: tuple[int, ...]  # released after the response
    # per check: (scope, key suffix, amount, window, shadow)
    specs: tuple[tuple[int, str, int, int, bool], ...]
    # per kind (requests, tokens, concurrency): its enforced checks, for the RateLimit fields
    report_groups: tuple[tuple[str, tuple[int, ...]], ...]
    shape: CheckShape  # the checks' keys and windows, for the storage


ACCOUNT, CLUSTER, GLOBAL = 0, 1, 2  # who a limit belongs to, in a Layout's specs


@dataclass(slots=True)
class Plan:
    layout: Layout
    checks: list[Check]
    key_layout: KeyLayout | None = None  # how the checks' keys are made, for the storage

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.layout.limits

    @property
    def token_checks(self) -> tuple[int, ...]:
        return self.layout.token_checks

    @property
    def lease_checks(self) -> tuple[int, ...]:
        return self.layout.lease_checks


def _layout(groups: list[tuple[int, LimitGroup]]) -> Layout:
    limits: list[Limit] = [BLOCK]
    kinds: list[str] = ["block"]
    specs: list[tuple[int, str, int, int, bool]] = [(ACCOUNT, BLOCK_SUFFIX, 1, -1, False)]
    used: set[tuple[int, str]] = set()
    for scope, group in groups:
        for window in group.windows:
            limits.append(window)
            kinds.append(window.kind)
            suffix = f":{window.kind[0]}{window.window}"
            if (scope, suffix) in used:
                # Two rules over the same window (e.g. a tighter one tried in shadow) need
                # their own counters, or each request would be counted once per rule.
                suffix += f"~{window.amount}"
            used.add((scope, suffix))
            specs.append((scope, suffix, window.amount, window.window, window.shadow))
        if group.concurrency is not None:
            limits.append(group.concurrency)
            kinds.append("concurrency")
            specs.append((scope, ":c", group.concurrency.amount, 0, group.concurrency.shadow))
    report = tuple(
        (kind, indexes)
        for kind in ("requests", "tokens", "concurrency")
        if (indexes := tuple(i for i, k in enumerate(kinds) if k == kind and not specs[i][4]))
    )
    return Layout(
        limits=tuple(limits),
        kinds=tuple(kinds),
        token_checks=tuple(i for i, kind in enumerate(kinds) if kind == "tokens"),
        lease_checks=tuple(i for i, kind in enumerate(kinds) if kind == "concurrency"),
        specs=tuple(specs),
        report_groups=report,
        shape=CheckShape(
            scopes=tuple(spec[0] for spec in specs),
            names=tuple(spec[1] for spec in specs),
            windows=tuple(spec[3] for spec in specs),
            shadows=tuple(spec[4] for spec in specs),
        ),
    )


def cluster_prefix(cluster: str) -> str:
    return KEY_PREFIX + subject_tag("c", cluster)


# (tier, account, cluster, factors) plans kept; cleared whole when full. An entry is ~2.5 KB
# (13 checks and their keys with the default policy): 20,000 hold ~50 MB a process, where
# 100,000 held ~250 MB. A plan built anew costs ~5 us more than one found here.
_SUBJECTS_CACHED = 20_000


class Planner:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.layouts = {
            name: _layout(
                [
                    (ACCOUNT, tier.limits),
                    (CLUSTER, policy.cluster_limits),
                    (GLOBAL, policy.global_limits),
                ]
            )
            for name, tier in policy.tiers.items()
        }
        self.global_prefix = KEY_PREFIX + "{g}"
        # An account sends many requests with the same tier, cluster and factors (a throttle
        # lasts): its checks differ only in the token costs, so the rest is built once and
        # shared (checks are never mutated). Saves most of the planning cost on the hot path.
        self._cached: dict[
            tuple[str, str, str | None, float, float], tuple[list[Check], KeyLayout]
        ] = {}

    def cluster_specs(self, tier: str) -> list[tuple[str, int]]:
        """(key suffix, window) of the cluster's window counters: what a merge carries over."""
        return [
            (suffix, window)
            for scope, suffix, _, window, _ in self.layouts[tier].specs
            if scope == CLUSTER and window > 0
        ]

    def plan(
        self,
        account: str,
        tier: str,
        tokens: int,
        cluster: str | None = None,
        account_factor: float = 1.0,
        cluster_factor: float = 1.0,
    ) -> Plan:
        """The checks of one request. ``account_factor`` scales the account's limits (an
        anomaly throttle), ``cluster_factor`` the cluster's (growth with membership x throttle)."""
        layout = self.layouts[tier]
        subject = (tier, account, cluster, account_factor, cluster_factor)
        cached = self._cached.get(subject)
        if cached is None:
            if len(self._cached) >= _SUBJECTS_CACHED:
                self._cached.clear()
            factors = (account_factor, cluster_factor, 1.0)
            cached = self._cached[subject] = self._checks(layout, account, cluster, factors)
        fixed, key_layout = cached
        checks = fixed.copy()
        for i in layout.token_checks:
            check = fixed[i]
            checks[i] = Check(check.key, check.limit, check.window, tokens, check.shadow)
        return Plan(layout, checks, key_layout)

    def _checks(
        self,
        layout: Layout,
        account: str,
        cluster: str | None,
        factors: tuple[float, float, float],
    ) -> tuple[list[Check], KeyLayout]:
        """Every check at cost 1 (``plan`` puts each request's token cost into its own
        copies), and how their keys are made."""
        prefixes = (account_prefix(account), cluster_prefix(cluster or account), self.global_prefix)
        checks = [
            Check(
                prefixes[scope] + suffix,
                amount
                if window < 0 or factors[scope] == 1.0
                else max(1, int(amount * factors[scope])),
                window,
                1,
                shadow,
            )
            for scope, suffix, amount, window, shadow in layout.specs
        ]
        return checks, KeyLayout(prefixes, layout.shape)
