from __future__ import annotations

import pytest
from pydantic import ValidationError

from hydraguard import load_policy
from hydraguard.cluster.config import ClusteringConfig, SignalSpec
from hydraguard.cluster.signals import SignalExtractor


def test_default_config_matches_the_default_policy_headers() -> None:
    config = ClusteringConfig()
    headers = {spec.header for spec in config.signals.values() if spec.header}
    assert headers == {"x-org-id", "x-payment-fingerprint", "x-device-fingerprint", "x-ja4"}
    assert config.signals["org"].explicit
    assert config.signals["payment"].weight >= config.threshold  # links alone


def test_defaults_are_the_shipped_policys_signals() -> None:
    assert ClusteringConfig() == load_policy().clustering


def test_placeholder_values_are_no_evidence_unless_a_policy_says_so() -> None:
    """An auth layer sends "unknown" or "-" when it has no card or org: every account
    without one would otherwise link into one cluster (org links outright)."""
    extractor = SignalExtractor(ClusteringConfig())
    for placeholder in ("unknown", "Unknown", " - ", "null", "0", "N/A"):
        headers = {"x-org-id": placeholder, "x-payment-fingerprint": placeholder}
        assert extractor.extract(headers, {}, None, None) == {}
    found = extractor.extract({"x-org-id": "acme"}, {}, None, None)
    assert found == {"org": ("acme",)}
    counted = ClusteringConfig.model_validate(
        {"signals": {"org": {"header": "x-org-id", "explicit": True, "ignore_values": []}}}
    )
    assert SignalExtractor(counted).extract({"x-org-id": "unknown"}, {}, None, None) == {
        "org": ("unknown",)
    }


def test_default_weak_signals_a_benign_crowd_shares_stay_below_threshold() -> None:
    signals = ClusteringConfig().signals
    crowd = signals["subnet"].weight + signals["ja4"].weight + signals["template"].weight
    assert crowd < ClusteringConfig().threshold


def test_template_weight_is_split_over_its_bands() -> None:
    spec = SignalSpec(template={"bands": 4}, weight=0.4)  # type: ignore[arg-type]
    assert spec.value_weight == pytest.approx(0.1)


def test_header_names_are_lower_cased() -> None:
    assert SignalSpec(header="X-Device", weight=0.5).header == "x-device"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"weight": 1.0}, "exactly one of header, state, client_ip, template"),
        ({"header": "x-a", "state": "a", "weight": 1.0}, "exactly one"),
        ({"header": "x-a"}, "weight > 0 or explicit"),
        ({"header": "x-a", "weight": 1, "ignore_cidrs": ["10.0.0.0/8"]}, "only to a client_ip"),
        ({"client_ip": {}, "weight": 1, "ignore_cidrs": ["10.0.0.0/33"]}, "not an IP address"),
        ({"client_ip": {"v4_prefix": 40}, "weight": 1}, "less than or equal to 32"),
        ({"header": "x-a", "weight": 1, "colour": "red"}, "Extra inputs are not permitted"),
        ({"header": "x-a", "weight": -1}, "greater than or equal to 0"),
        ({"header": "x-a", "weight": 1, "max_values_per_account": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_signal_specs_are_rejected(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SignalSpec.model_validate(spec)


def test_manual_is_a_reserved_signal_name() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        ClusteringConfig.model_validate({"signals": {"manual": {"header": "x-a", "weight": 1}}})


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        ClusteringConfig().threshold = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90d", 7_776_000.0), ("12h", 43_200.0), (3600, 3600.0), ("0", 0.0), (0, 0.0), (None, 0.0)],
)
def test_retention_is_a_duration_and_zero_or_null_keeps_everything(
    raw: object, seconds: float
) -> None:
    assert ClusteringConfig.model_validate({"retention": raw}).retention == seconds


@pytest.mark.parametrize(
    ("raw", "message"), [(-1, "greater than or equal to 0"), ("soon", "not a duration")]
)
def test_invalid_retention_is_rejected(raw: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClusteringConfig.model_validate({"retention": raw})


def test_the_default_retention_is_90_days() -> None:
    assert ClusteringConfig().retention == 90 * 86400 == load_policy().clustering.retention


def test_an_account_holds_64_values_of_a_signal_unless_a_policy_says_otherwise() -> None:
    assert {spec.max_values_per_account for spec in ClusteringConfig().signals.values()} == {64}
    spec = SignalSpec.model_validate({"header": "x-a", "weight": 1, "max_values_per_account": 8})
    assert spec.max_values_per_account == 8
