"""Rules: hysteresis, the most severe action deciding, shadow rules, blocks that last."""

from __future__ import annotations

from typing import Any

import pytest
from assess_traffic import START

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.risk import RiskEngine
from hydraguard.assess.rules import Action, combine


def engine_with(rules: list[dict[str, Any]] | None = None, **section: Any) -> RiskEngine:
    data: dict[str, Any] = {"risk": {"half_life": 1e9, "hysteresis": 0.05}, **section}
    if rules is not None:
        data["rules"] = rules
    return RiskEngine(AnomalyConfig.model_validate(data))


def at(engine: RiskEngine, risk: float, ts: float = START, account: str = "a") -> Any:
    snapshot = engine.snapshot("account", account) or {}
    engine.restore("account", account, {**snapshot, "risk": risk, "ts": ts})
    return engine.assess(account, None, ts)


def throttled(assessment: Any) -> bool:
    return any(a.kind == "throttle" and not a.shadow for a in assessment.actions)


THROTTLE_AT_055: list[dict[str, Any]] = [
    {"name": "throttle-risky", "when": {"risk_gte": 0.55}, "action": "throttle", "factor": 0.5}
]


def test_hysteresis_enters_at_the_threshold_and_leaves_below_the_margin() -> None:
    engine = engine_with(THROTTLE_AT_055)
    risks = [0.54, 0.56, 0.53, 0.51, 0.56, 0.52, 0.49, 0.53, 0.54, 0.55]
    expected = [False, True, True, True, True, True, False, False, False, True]
    assert [throttled(at(engine, r)) for r in risks] == expected


def test_no_flapping_when_the_risk_wobbles_around_the_threshold() -> None:
    engine = engine_with(THROTTLE_AT_055)
    wobble = [0.55 + (0.01 if i % 2 else -0.01) for i in range(40)]
    states = [throttled(at(engine, r)) for r in wobble]
    assert states == [False] + [True] * 39


def test_without_hysteresis_it_would_flap() -> None:
    engine = engine_with(THROTTLE_AT_055, risk={"half_life": 1e9, "hysteresis": 0.0})
    states = [throttled(at(engine, 0.55 + (0.01 if i % 2 else -0.01))) for i in range(6)]
    assert states == [False, True] * 3


RULES: list[dict[str, Any]] = [
    {"name": "flag", "when": {"risk_gte": 0.3}, "action": "flag"},
    {"name": "slow", "when": {"risk_gte": 0.5}, "action": "throttle", "factor": 0.5},
    {"name": "slower", "when": {"risk_gte": 0.6}, "action": "throttle", "factor": 0.25},
    {"name": "cap", "when": {"risk_gte": 0.5}, "action": "cap_max_tokens", "max_tokens": 256},
    {"name": "strip-lp", "when": {"risk_gte": 0.5}, "action": "strip", "params": ["logprobs"]},
    {"name": "strip-lb", "when": {"risk_gte": 0.6}, "action": "strip", "params": ["logit_bias"]},
    {
        "name": "try-block",
        "when": {"risk_gte": 0.6},
        "action": "block",
        "seconds": 60,
        "mode": "shadow",
    },
    {"name": "block", "when": {"risk_gte": 0.8}, "action": "block", "seconds": "10m"},
]


def test_the_most_severe_enforced_action_decides_and_kinds_compose() -> None:
    result = at(engine_with(RULES), 0.65)
    assert result.rule == "slower"
    assert [(a.kind, a.shadow) for a in result.actions] == [
        ("throttle", False),
        ("cap_max_tokens", False),
        ("strip", False),
        ("flag", False),
        ("block", True),
    ]
    throttle, cap, strip = result.actions[:3]
    assert throttle.factor == 0.25 and throttle.rule == "slower"
    assert cap.max_tokens == 256
    assert strip.params == ("logprobs", "logit_bias")


def test_a_block_makes_the_other_enforced_actions_moot() -> None:
    result = at(engine_with(RULES), 0.85)
    assert result.rule == "block"
    assert [(a.kind, a.shadow) for a in result.actions] == [("block", False), ("block", True)]
    assert result.actions[0].seconds == 600


def test_shadow_actions_never_decide() -> None:
    rules = [
        {
            "name": "watch",
            "when": {"risk_gte": 0.5},
            "action": "block",
            "seconds": 60,
            "mode": "shadow",
        }
    ]
    result = at(engine_with(rules), 0.9)
    assert result.rule is None
    assert result.actions == (Action("block", "watch", shadow=True, seconds=60.0),)


@pytest.mark.parametrize(
    ("section_mode", "engine_mode", "shadow"),
    [("enforce", None, False), ("shadow", None, True), ("enforce", "shadow", True)],
)
def test_rules_without_a_mode_inherit_it(
    section_mode: str, engine_mode: str | None, shadow: bool
) -> None:
    config = AnomalyConfig.model_validate({"mode": section_mode, "risk": {"half_life": 1e9}})
    engine = RiskEngine(config, mode=engine_mode)
    result = at(engine, 0.6)
    assert result.actions and all(a.shadow is shadow for a in result.actions)


def test_a_block_lasts_its_duration_after_the_risk_falls() -> None:
    rules = [{"name": "block", "when": {"risk_gte": 0.9}, "action": "block", "seconds": 600}]
    engine = RiskEngine(AnomalyConfig.model_validate({"rules": rules, "risk": {"half_life": 30}}))
    assert at(engine, 0.95, START).rule == "block"
    # Thirty seconds later the risk has halved, but the block holds ...
    later = engine.assess("a", None, START + 30)
    assert later.risk < 0.5 and later.rule == "block"
    assert engine.assess("a", None, START + 599).rule == "block"
    # ... until its duration is over.
    assert engine.assess("a", None, START + 601).actions == ()


def test_a_block_rearms_while_the_risk_stays_high() -> None:
    rules = [{"name": "block", "when": {"risk_gte": 0.9}, "action": "block", "seconds": 600}]
    engine = engine_with(rules)
    at(engine, 0.95, START)
    at(engine, 0.95, START + 500)
    assert at(engine, 0.1, START + 1000).rule == "block"
    assert at(engine, 0.1, START + 1101).actions == ()


def test_unblock_lifts_a_block_and_the_risk_behind_it() -> None:
    rules = [{"name": "block", "when": {"risk_gte": 0.9}, "action": "block", "seconds": 600}]
    engine = engine_with(rules)
    assert at(engine, 0.95, START).rule == "block"
    assert engine.unblock("account", "a", at=START)
    assert engine.assess("a", None, START + 1).actions == ()  # not blocked again at once
    assert engine.risk("account", "a", START + 1) == 0.0
    assert not engine.unblock("account", "a")
    # Risk another replica published before the unblock is stale; a later one counts.
    engine.absorb("account", "a", 0.95, START - 1, (), START + 1)
    assert engine.risk("account", "a", START + 1) == 0.0
    engine.absorb("account", "a", 0.95, START + 1, (), START + 1)
    assert engine.assess("a", None, START + 1).rule == "block"


def test_cluster_rules_follow_the_cluster_risk() -> None:
    rules = [
        {
            "name": "cluster-slow",
            "when": {"cluster_risk_gte": 0.7},
            "action": "throttle",
            "factor": 0.1,
        }
    ]
    engine = engine_with(rules, risk={"half_life": 1e9, "cluster_influence": 0.0})
    engine.restore("cluster", "c", {"risk": 0.75, "ts": START})
    result = engine.assess("a", "c", START)
    assert result.risk == 0.0 and result.rule == "cluster-slow"
    assert engine.assess("a", None, START).actions == ()  # no cluster, no cluster rule


def test_account_rules_ignore_the_cluster() -> None:
    rules = [{"name": "acct", "when": {"account_risk_gte": 0.5}, "action": "flag"}]
    engine = engine_with(rules, risk={"half_life": 1e9, "cluster_influence": 1.0})
    engine.restore("cluster", "c", {"risk": 0.9, "ts": START})
    assert engine.assess("a", "c", START).actions == ()


def test_combine_keeps_the_strictest_of_a_kind() -> None:
    actions, rule = combine(
        [
            Action("delay", "short", seconds=1.0),
            Action("delay", "long", seconds=5.0),
            Action("cap_max_tokens", "big", max_tokens=1000),
            Action("cap_max_tokens", "small", max_tokens=100),
        ]
    )
    assert [(a.kind, a.rule) for a in actions] == [("delay", "long"), ("cap_max_tokens", "small")]
    assert rule == "long"
    assert combine([]) == ((), None)
