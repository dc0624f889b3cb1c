"""Threshold rules compiled from the policy, and how the triggered ones combine into actions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from hydraguard.assess.config import AnomalyConfig

ActionKind = Literal["flag", "strip", "cap_max_tokens", "throttle", "delay", "block"]
Level = Literal["effective", "account", "cluster"]

# Least to most severe: flag only records, block refuses everything.
SEVERITY: dict[str, int] = {
    "flag": 0,
    "strip": 1,
    "cap_max_tokens": 2,
    "throttle": 3,
    "delay": 4,
    "block": 5,
}


@dataclass(frozen=True, slots=True)
class Action:
    """What to do to a request; ``shadow`` actions are reported, never applied."""

    kind: ActionKind
    rule: str
    shadow: bool = False
    factor: float | None = None  # throttle: multiply the quotas by this
    max_tokens: int | None = None  # cap_max_tokens
    params: tuple[str, ...] = ()  # strip: body keys to remove
    seconds: float | None = None  # delay: hold the request; block: how long it lasts


@dataclass(frozen=True, slots=True)
class CompiledRule:
    bit: int  # this rule's bit in a subject's mask of active rules
    name: str
    level: Level
    threshold: float
    action: Action


def compile_rules(config: AnomalyConfig, mode: str | None = None) -> tuple[CompiledRule, ...]:
    """Rules in policy order; a rule without ``mode`` takes ``mode`` or the section's."""
    default_mode = mode or config.mode
    compiled = []
    for i, rule in enumerate(config.rules):
        when = rule.when
        level: Level
        if when.account_risk_gte is not None:
            level, threshold = "account", when.account_risk_gte
        elif when.cluster_risk_gte is not None:
            level, threshold = "cluster", when.cluster_risk_gte
        else:
            assert when.risk_gte is not None, "When validates exactly one threshold"
            level, threshold = "effective", when.risk_gte
        action = Action(
            kind=rule.action,
            rule=rule.name,
            shadow=(rule.mode or default_mode) == "shadow",
            factor=rule.factor,
            max_tokens=rule.max_tokens,
            params=tuple(rule.params or ()),
            seconds=rule.seconds,
        )
        compiled.append(CompiledRule(1 << i, rule.name, level, threshold, action))
    return tuple(compiled)


def _stricter(a: Action, b: Action) -> Action:
    """The stricter of two actions of one kind (strip merges its parameters)."""
    if a.kind == "throttle":
        return a if (a.factor or 1.0) <= (b.factor or 1.0) else b
    if a.kind == "cap_max_tokens":
        return a if (a.max_tokens or 0) <= (b.max_tokens or 0) else b
    if a.kind in ("delay", "block"):
        return a if (a.seconds or 0.0) >= (b.seconds or 0.0) else b
    if a.kind == "strip":
        return replace(a, params=a.params + tuple(p for p in b.params if p not in a.params))
    return a


def combine(triggered: Iterable[Action]) -> tuple[tuple[Action, ...], str | None]:
    """(actions, deciding rule): one action per kind, the strictest, most severe first.

    Enforced actions of different kinds compose (cap and strip and throttle
    together), except that a block makes the rest moot. Shadow actions follow,
    merged the same way but kept apart; they never decide. The deciding rule
    is the one behind the most severe enforced action.
    """
    enforced: dict[str, Action] = {}
    shadow: dict[str, Action] = {}
    for action in triggered:
        chosen = shadow if action.shadow else enforced
        held = chosen.get(action.kind)
        chosen[action.kind] = action if held is None else _stricter(held, action)
    if "block" in enforced:
        enforced = {"block": enforced["block"]}
    ordered = sorted(enforced.values(), key=lambda a: -SEVERITY[a.kind])
    ordered += sorted(shadow.values(), key=lambda a: -SEVERITY[a.kind])
    return tuple(ordered), (ordered[0].rule if enforced else None)
