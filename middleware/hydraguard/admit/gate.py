"""The decision: plan the checks, reserve them all or nothing, and settle after the response.

Shared by the live middleware and by ``hydraguard replay``, so a backtest runs the very
code that production runs.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass

from ..identify import Identity
from ..inspect.facts import MAX_COUNT, RequestFacts, estimate_input_tokens
from ..policy.compiled import CompiledPolicy
from ..storage.base import Charge, Lease, Storage, Verdict, ceil_seconds
from ..storage.resilient import ResilientStorage
from .plan import Plan, Planner


@dataclass(slots=True)
class Decision:
    identity: Identity
    plan: Plan
    verdict: Verdict
    store: Storage | None  # where the reservation lives; None when nothing was reserved
    degraded: str | None  # storage fallback taken, if any
    lease_id: str
    input_estimate: int
    output_reserved: int
    admitted: bool
    shadow_denied: bool  # a shadow rule would have refused
    rule: str | None  # the rule that refused (or would have, in shadow)
    retry_after: int  # whole seconds until the refusing rule has room
    too_large: bool  # the request alone exceeds a limit: waiting will not help
    cluster: str | None = None  # the account's cluster at decision time
    ts: float = 0.0  # when it was decided (arrival)
    cluster_size: int = 1
    risk: float = 0.0  # the account's effective risk score at decision time, 0..1
    actions: tuple[str, ...] = ()  # actions applied besides plain admission (cap_max_tokens, ...)
    output_cap: int | None = None  # max_tokens cap applied to the request, if any
    strip: tuple[str, ...] = ()  # request parameters an anomaly rule removes
    delay: float = 0.0  # seconds an anomaly rule holds the request
    detectors: tuple[str, ...] = ()  # the detectors that contributed most to the risk
    shadow_actions: tuple[str, ...] = ()  # what anomaly rules in shadow would have done
    action_rules: tuple[tuple[str, str, bool], ...] = ()  # (rule, kind, shadow), for metrics


class Gate:
    def __init__(self, policy: CompiledPolicy, storage: ResilientStorage) -> None:
        self.policy = policy
        self.storage = storage
        self.planner = Planner(policy)
        self.lease_ttl = policy.storage.concurrency_lease
        self._lease_prefix = f"{os.getpid()}-{secrets.token_hex(4)}-"
        self._lease_counter = itertools.count()

    def tokens_needed(self, facts: RequestFacts | None, tier: str) -> tuple[int, int]:
        """(input estimate, output allowance) to reserve; generic routes count requests only."""
        if facts is None:
            return 0, 0
        policy = self.policy
        estimate = estimate_input_tokens(facts, policy.chars_per_token, policy.tokens_per_message)
        allowance = (
            facts.max_tokens
            if facts.max_tokens is not None
            else policy.tiers[tier].max_output_tokens
        )
        # A count past MAX_COUNT (a 400-digit max_tokens, max_tokens x n past a double) is
        # refused as too large all the same; unbounded, it overflowed the windows' float
        # arithmetic in memory (a 500) and failed the Redis call, which counts towards the
        # breaker: five such requests opened it, failing every account open.
        return min(estimate, MAX_COUNT), min(allowance * facts.n, MAX_COUNT)

    async def admit(
        self,
        identity: Identity,
        facts: RequestFacts | None,
        now: float,
        cluster: str | None = None,
        account_factor: float = 1.0,
        cluster_factor: float = 1.0,
    ) -> Decision:
        estimate, allowance = self.tokens_needed(facts, identity.tier)
        plan = self.planner.plan(
            identity.account,
            identity.tier,
            estimate + allowance,
            cluster,
            account_factor,
            cluster_factor,
        )
        lease_id = self._lease_prefix + str(next(self._lease_counter))
        outcome = await self.storage.acquire(
            plan.checks, now, lease_id, self.lease_ttl, plan.key_layout
        )
        verdict = outcome.verdict
        rule = None
        wait = 0.0
        too_large = False
        shadow_denied = False
        if not verdict.admitted:
            if outcome.degraded == "storage_closed":
                rule = "storage"
            for i, seconds in enumerate(verdict.retry_after):
                check = plan.checks[i]
                if seconds > 0 and not check.shadow and seconds > wait:
                    wait, rule = seconds, plan.limits[i].rule
                    too_large = check.cost > check.limit
        elif any(verdict.retry_after):  # a shadow check refused
            for i, seconds in enumerate(verdict.retry_after):
                if seconds > 0:
                    shadow_denied = True
                    if seconds > wait:
                        wait, rule = seconds, plan.limits[i].rule
        # Positional, in field order: keyword arguments made this twice as costly (per request).
        return Decision(
            identity,
            plan,
            verdict,
            outcome.store if verdict.charged else None,  # store
            outcome.degraded,
            lease_id,
            estimate,  # input_estimate
            allowance,  # output_reserved
            verdict.admitted,
            shadow_denied,
            rule,
            ceil_seconds(wait) if wait > 0 else (1 if not verdict.admitted else 0),  # retry_after
            too_large,
            cluster,
            now,  # ts
        )

    def settle(self, decision: Decision, used_tokens: int, now: float) -> None:
        """Correct the token reservation to ``used_tokens`` and release concurrency leases."""
        if decision.store is None:  # nothing was reserved
            return
        plan = decision.plan
        checks = plan.checks
        # A shadow check that refused was not charged.
        skip_shadow = decision.shadow_denied
        delta = used_tokens - (decision.input_estimate + decision.output_reserved)
        charges: list[Charge] = []
        if delta:
            window_ids = decision.verdict.window_ids
            for i in plan.layout.token_checks:
                check = checks[i]
                if not (skip_shadow and check.shadow):
                    charges.append(Charge(check.key, check.window, window_ids[i], delta))
        leases = [
            Lease(checks[i].key, decision.lease_id)
            for i in plan.layout.lease_checks
            if not (skip_shadow and checks[i].shadow)
        ]
        self.storage.settle(decision.store, charges, leases, now)
