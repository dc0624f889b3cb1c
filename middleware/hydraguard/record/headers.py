"""Which request headers and ``scope["state"]`` keys the audit log keeps: the configured
context headers plus every header and state key the policy itself reads, so a replay of
the log can reproduce tiers and clusters."""

from __future__ import annotations

from ..policy.compiled import CompiledPolicy


def audit_headers(policy: CompiledPolicy) -> tuple[str, ...]:
    names: list[str] = []
    if policy.model is not None:
        names += policy.model.audit.headers
    names += [source.header for source in policy.identity.account if source.header]
    if policy.identity.tier.header:
        names.append(policy.identity.tier.header.lower())
    names += [spec.header for spec in policy.clustering.signals.values() if spec.header]
    return tuple(dict.fromkeys(name.lower() for name in names))


def audit_state_keys(policy: CompiledPolicy) -> tuple[str, ...]:
    """The ``scope["state"]`` keys the policy reads (account, tier, linking signals)."""
    keys = [source.state for source in policy.identity.account if source.state]
    if policy.identity.tier.state:
        keys.append(policy.identity.tier.state)
    keys += [spec.state for spec in policy.clustering.signals.values() if spec.state]
    return tuple(dict.fromkeys(keys))
