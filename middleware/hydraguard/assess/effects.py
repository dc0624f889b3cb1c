"""What an assessment does to one request: the anomaly rules' actions, folded together."""

from __future__ import annotations

from dataclasses import dataclass

from .risk import Assessment


# Not frozen (cheaper to build: see Assessment); nothing changes one once built.
@dataclass(slots=True)
class Effects:
    factor: float = 1.0  # throttle: the account's and cluster's limits are multiplied by this
    cap: int | None = None  # cap_max_tokens
    strip: tuple[str, ...] = ()  # request parameters to remove
    delay: float = 0.0  # seconds to hold the request
    block: float = 0.0  # seconds to block the account
    applied: tuple[str, ...] = ()  # enforced action kinds, for decisions and metrics
    shadow: tuple[str, ...] = ()  # actions rules in shadow would have taken
    rule: str | None = None  # the enforced rule that decided
    # (rule, kind, shadow) of every action, enforced or not: metrics count each by its own
    # rule (several rules can act at once, and a shadow rule is named, not just "shadow").
    by_rule: tuple[tuple[str, str, bool], ...] = ()


NONE = Effects()


def effects_of(assessment: Assessment) -> Effects:
    if not assessment.actions:
        return NONE
    factor, cap, delay, block = 1.0, None, 0.0, 0.0
    strip: list[str] = []
    applied: list[str] = []
    shadow: list[str] = []
    for action in assessment.actions:
        if action.shadow:
            shadow.append(action.kind)
            continue
        applied.append(action.kind)
        if action.kind == "throttle" and action.factor is not None:
            factor = min(factor, action.factor)
        elif action.kind == "cap_max_tokens" and action.max_tokens is not None:
            cap = action.max_tokens if cap is None else min(cap, action.max_tokens)
        elif action.kind == "strip":
            strip += [p for p in action.params if p not in strip]
        elif action.kind == "delay" and action.seconds:
            delay = max(delay, action.seconds)
        elif action.kind == "block" and action.seconds:
            block = max(block, action.seconds)
    by_rule = tuple((action.rule, action.kind, action.shadow) for action in assessment.actions)
    return Effects(
        factor,
        cap,
        tuple(strip),
        delay,
        block,
        tuple(applied),
        tuple(shadow),
        assessment.rule,
        by_rule,
    )
