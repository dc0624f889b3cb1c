"""The ``anomaly:`` policy section: defaults, durations, and every mistake named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hydraguard import load_policy
from hydraguard.assess.config import AnomalyConfig, parse_duration


def test_defaults_are_valid_and_complete() -> None:
    config = AnomalyConfig()
    assert config.risk.combination == "noisy_or"
    assert [r.name for r in config.rules] == [
        "flag-suspicious",
        "strip-probing",
        "cap-output",
        "throttle-risky",
        "block-extraction",
        "block-cluster",
    ]
    assert AnomalyConfig.model_validate(config.model_dump()) == config


def test_defaults_are_the_shipped_policys_tuned_values() -> None:
    """A policy that says only ``anomaly: {enabled: true}`` gets what the default policy
    was tuned to (benchmarks and the efficacy table), not older, untuned numbers."""
    shipped = load_policy().anomaly
    defaults = AnomalyConfig()
    assert defaults.detectors == shipped.detectors
    assert defaults.rules == shipped.rules
    assert defaults.risk == shipped.risk


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("90", 90.0), ("1.5h", 5400.0), ("500ms", 0.5), ("2d", 172800.0), (45, 45)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_half_life_takes_a_duration_string() -> None:
    assert AnomalyConfig.model_validate({"risk": {"half_life": "2h"}}).risk.half_life == 7200.0


def errors(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        AnomalyConfig.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"detectors": {"volume": {"wieght": 0.2}}}, "detectors.volume.wieght"),
        ({"detectors": {"telepathy": {}}}, "detectors.telepathy"),
        ({"risk": {"half_life": "soon"}}, "not a duration"),
        ({"risk": {"half_life": 0}}, "greater than 0"),
        ({"risk": {"combination": "max"}}, "noisy_or"),
        ({"risk": {"cluster_influence": 1.5}}, "less than or equal to 1"),
        ({"lexicon_extra": ["(unclosed"]}, "invalid regex"),
        (
            {"rules": [{"name": "x", "when": {"risk_gte": 0.5}, "action": "throttle"}]},
            "action throttle needs factor",
        ),
        (
            {"rules": [{"name": "x", "when": {"risk_gte": 0.5}, "action": "flag", "factor": 0.5}]},
            "factor does not apply to action flag",
        ),
        (
            {"rules": [{"name": "x", "when": {}, "action": "flag"}]},
            "exactly one of risk_gte",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "when": {"risk_gte": 0.5, "cluster_risk_gte": 0.5},
                        "action": "flag",
                    }
                ]
            },
            "exactly one of risk_gte",
        ),
        (
            {
                "rules": [
                    {"name": "x", "when": {"risk_gte": 0.5}, "action": "flag"},
                    {"name": "x", "when": {"risk_gte": 0.6}, "action": "flag"},
                ]
            },
            "duplicate rule names: x",
        ),
        (
            {"rules": [{"name": "x", "when": {"risk_gte": 0.5}, "action": "ban"}]},
            "rules.0.action",
        ),
        (
            {"rules": [{"name": "x", "when": {"risk_gte": 0.5}, "action": "strip", "params": []}]},
            "at least 1 item",
        ),
    ],
)
def test_mistakes_are_named(data: dict[str, Any], message: str) -> None:
    assert message in errors(data)


def test_config_is_frozen() -> None:
    config = AnomalyConfig()
    with pytest.raises(ValidationError):
        config.enabled = False
