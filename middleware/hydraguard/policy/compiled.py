"""The policy compiled once into frozen lookup structures; the request path only reads them."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from limits import parse_many

from ..assess.config import AnomalyConfig
from ..cluster.config import ClusteringConfig
from . import schema

Scope = str  # "account" | "global" (and "cluster" once clusters land)


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """A request or token budget over a window, e.g. account tokens 100000/minute."""

    rule: (
        str  # stable, bounded name used in metrics, logs and 429 bodies: "account.tokens.1/minute"
    )
    scope: Scope
    kind: str  # "requests" | "tokens"
    amount: int
    window: int  # seconds
    shadow: bool
    text: str  # as written in the policy


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    rule: str
    scope: Scope
    amount: int
    shadow: bool


@dataclass(frozen=True, slots=True)
class LimitGroup:
    windows: tuple[WindowLimit, ...]
    concurrency: ConcurrencyLimit | None


@dataclass(frozen=True, slots=True)
class CompiledTier:
    name: str
    limits: LimitGroup
    max_output_tokens: int


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    dialect: str
    name: str  # the path or prefix as written: a bounded metrics label
    max_bytes: int = schema.Body().max_bytes  # the largest body read: route's, else body.max_bytes


@dataclass(frozen=True, slots=True)
class Routes:
    exact: dict[str, CompiledRoute]
    prefixes: tuple[tuple[str, CompiledRoute], ...]  # longest first
    # The same, keyed by canonical_path(): what a path spelled otherwise is matched against.
    canonical: dict[str, CompiledRoute] = field(default_factory=dict)
    canonical_prefixes: tuple[tuple[str, CompiledRoute], ...] = ()

    def __post_init__(self) -> None:
        if not self.canonical:
            self.canonical.update((canonical_path(p), r) for p, r in self.exact.items())
        if not self.canonical_prefixes:
            canonical = tuple(
                (canonical_path(p) + "/" * p.endswith("/"), r) for p, r in self.prefixes
            )
            object.__setattr__(self, "canonical_prefixes", canonical)

    def match(self, path: str) -> CompiledRoute | None:
        route = _lookup(path, self.exact, self.prefixes)
        if route is None:
            # Upstreams behind nginx or Express also serve "//v1/chat/completions",
            # "/v1/chat/completions/", "/v1/x/../chat/completions" or "/V1/Chat/Completions"
            # as the route: matched as written, such a path would pass unguarded. Only paths
            # that missed pay for this.
            route = _lookup(canonical_path(path), self.canonical, self.canonical_prefixes)
        return route


def _lookup(
    path: str,
    exact: dict[str, CompiledRoute],
    prefixes: tuple[tuple[str, CompiledRoute], ...],
) -> CompiledRoute | None:
    route = exact.get(path)
    if route is not None:
        return route
    for prefix, candidate in prefixes:
        if path.startswith(prefix):
            return candidate
    return None


def canonical_path(path: str) -> str:
    """``path`` lower-cased, with empty and ``.`` segments dropped and ``..`` resolved;
    no trailing slash (``"/"`` for the root)."""
    segments: list[str] = []
    for segment in path.lower().split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    return "/" + "/".join(segments)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    source: str
    shadow: bool
    sliding: bool
    identity: schema.Identity
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    routes: Routes
    tiers: dict[str, CompiledTier]
    default_tier: str
    global_limits: LimitGroup
    cluster_limits: LimitGroup
    cluster_growth: schema.Growth
    clustering: ClusteringConfig
    anomaly: AnomalyConfig
    body_max_bytes: int
    chars_per_token: float
    tokens_per_message: int
    stream_usage: bool
    storage: schema.Storage
    admin_token: str | None
    rules: tuple[str, ...] = field(default=())  # every rule name, to initialise metric labels
    model: schema.Policy | None = None


def _limit_group(
    limit_set: schema.LimitSet, scope: Scope, prefix: str, policy_shadow: bool
) -> LimitGroup:
    windows: list[WindowLimit] = []
    for kind, rules in (("requests", limit_set.requests), ("tokens", limit_set.tokens)):
        for rule in rules:
            shadow = (rule.mode or ("shadow" if policy_shadow else "enforce")) == "shadow"
            for item in parse_many(rule.limit):
                window = item.get_expiry()
                windows.append(
                    WindowLimit(
                        rule=f"{prefix}.{kind}.{item.amount}/{_per(item.multiples, item.GRANULARITY.name)}",
                        scope=scope,
                        kind=kind,
                        amount=item.amount,
                        window=window,
                        shadow=shadow,
                        text=rule.limit,
                    )
                )
    concurrency = None
    if limit_set.concurrency is not None:
        rule_mode = limit_set.concurrency.mode or ("shadow" if policy_shadow else "enforce")
        concurrency = ConcurrencyLimit(
            rule=f"{prefix}.concurrency",
            scope=scope,
            amount=limit_set.concurrency.max,
            shadow=rule_mode == "shadow",
        )
    return LimitGroup(tuple(windows), concurrency)


def compile_policy(policy: schema.Policy, source: str = "<policy>") -> CompiledPolicy:
    shadow = policy.mode == "shadow"
    tiers = {
        name: CompiledTier(
            name=name,
            limits=_limit_group(tier, "account", f"tier.{name}", shadow),
            max_output_tokens=tier.max_output_tokens,
        )
        for name, tier in policy.tiers.items()
    }
    global_limits = _limit_group(policy.global_, "global", "global", shadow)
    cluster_limits = _limit_group(policy.clusters, "cluster", "cluster", shadow)
    exact: dict[str, CompiledRoute] = {}
    prefixes: list[tuple[str, CompiledRoute]] = []
    for route in policy.routes:
        max_bytes = route.max_bytes or policy.body.max_bytes
        if route.path is not None:
            exact.setdefault(route.path, CompiledRoute(route.dialect, route.path, max_bytes))
        else:
            assert route.prefix is not None
            compiled = CompiledRoute(route.dialect, route.prefix + "*", max_bytes)
            prefixes.append((route.prefix, compiled))
    prefixes.sort(key=lambda pair: len(pair[0]), reverse=True)
    admin_token = policy.admin.token or (
        os.environ.get(policy.admin.token_env) if policy.admin.token_env else None
    )
    rules: list[str] = []
    for group in (*(t.limits for t in tiers.values()), cluster_limits, global_limits):
        rules += [window.rule for window in group.windows]
        if group.concurrency is not None:
            rules.append(group.concurrency.rule)
    return CompiledPolicy(
        name=policy.name,
        source=source,
        shadow=shadow,
        sliding=policy.strategy == "sliding-window",
        identity=policy.identity,
        trusted_proxies=tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in policy.identity.trusted_proxies
        ),
        routes=Routes(exact, tuple(prefixes)),
        tiers=tiers,
        default_tier=policy.identity.tier.default,
        global_limits=global_limits,
        cluster_limits=cluster_limits,
        cluster_growth=policy.clusters.growth,
        clustering=policy.clustering,
        anomaly=policy.anomaly,
        body_max_bytes=policy.body.max_bytes,
        chars_per_token=policy.tokens.chars_per_token,
        tokens_per_message=policy.tokens.per_message,
        stream_usage=policy.tokens.stream_usage,
        storage=policy.storage,
        admin_token=admin_token or None,
        rules=tuple(dict.fromkeys(rules)),
        model=policy,
    )


def _per(multiples: int, granularity: str) -> str:
    return granularity if multiples == 1 else f"{multiples}{granularity}"
