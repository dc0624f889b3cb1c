from __future__ import annotations

from typing import Any

import pytest

from hydraguard.cluster.config import ClusteringConfig
from hydraguard.cluster.signals import SignalExtractor
from hydraguard.identify import MAX_ACCOUNT_CHARS

CONFIG = ClusteringConfig.model_validate(
    {
        "signals": {
            "org": {"header": "X-Org-Id", "explicit": True, "ignore_values": ["None"]},
            "pay": {"header": "x-payment-fingerprint", "weight": 1.0},
            "team": {"state": "team", "weight": 0.5},
            "net": {
                "client_ip": {"v4_prefix": 24, "v6_prefix": 48},
                "weight": 0.3,
                "ignore_cidrs": ["10.0.0.0/8", "fc00::/7"],
                "ignore_values": ["203.0.113.0/24"],
            },
            "tpl": {"template": {"bands": 2}, "weight": 0.3},
        }
    }
)
EXTRACTOR = SignalExtractor(CONFIG)


@pytest.mark.parametrize(
    ("headers", "state", "ip", "bands", "expected"),
    [
        ({}, {}, None, None, {}),
        ({"x-org-id": "acme"}, {}, None, None, {"org": ("acme",)}),
        ({"x-org-id": "  acme "}, {}, None, None, {"org": ("acme",)}),
        ({"x-org-id": "none"}, {}, None, None, {}),  # ignored, case-insensitively
        ({"x-org-id": ""}, {}, None, None, {}),
        ({"x-payment-fingerprint": "p1"}, {}, None, None, {"pay": ("p1",)}),
        ({}, {"team": "red"}, None, None, {"team": ("red",)}),
        ({}, {"team": ["red", "blue", "red"]}, None, None, {"team": ("red", "blue")}),
        ({}, {"team": 7}, None, None, {"team": ("7",)}),
        ({}, {"team": None}, None, None, {}),
        ({}, {}, "198.51.100.77", None, {"net": ("198.51.100.0/24",)}),
        ({}, {}, "2001:db8:1234:5678::1", None, {"net": ("2001:db8:1234::/48",)}),
        ({}, {}, "::ffff:198.51.100.9", None, {"net": ("198.51.100.0/24",)}),
        ({}, {}, "::ffff:10.9.8.7", None, {}),  # mapped into an ignored CIDR
        # a zone survives only when the prefix clears no host bits (as ipaddress does)
        ({}, {}, "2001:db8:1:2::1%eth0", None, {"net": ("2001:db8:1::/48",)}),
        ({}, {}, "2001:db8:1::%eth0", None, {"net": ("2001:db8:1::%eth0/48",)}),
        ({}, {}, "10.1.2.3", None, {}),  # ignored CIDR
        ({}, {}, "fd00::1", None, {}),
        ({}, {}, "203.0.113.5", None, {}),  # ignored prefix value
        ({}, {}, "not-an-ip", None, {}),
        ({}, {}, None, ["b0", "b1", "b2"], {"tpl": ("b0", "b1")}),  # cut to bands
        ({}, {}, None, [], {}),
    ],
)
def test_extract(
    headers: dict[str, str],
    state: dict[str, Any],
    ip: str | None,
    bands: list[str] | None,
    expected: dict[str, tuple[str, ...]],
) -> None:
    assert EXTRACTOR.extract(headers, state, ip, bands) == expected


def test_extract_everything_at_once() -> None:
    found = EXTRACTOR.extract(
        {"x-org-id": "acme", "x-payment-fingerprint": "p1", "x-other": "z"},
        {"team": "red"},
        "198.51.100.1",
        ["b0", "b1"],
    )
    assert found == {
        "org": ("acme",),
        "pay": ("p1",),
        "team": ("red",),
        "net": ("198.51.100.0/24",),
        "tpl": ("b0", "b1"),
    }


def test_default_config_ignores_private_addresses() -> None:
    extractor = SignalExtractor(ClusteringConfig())
    assert "subnet" not in extractor.extract({}, {}, "192.168.1.5", None)
    assert "subnet" not in extractor.extract({}, {}, "127.0.0.1", None)
    assert extractor.extract({}, {}, "8.8.8.8", None) == {"subnet": ("8.8.8.0/24",)}


def test_long_values_are_kept_as_bounded_digests() -> None:
    # A 16 KB device fingerprint was kept whole in the linking index and in Redis key names,
    # for every request that sent one. A long value now becomes a digest, as a long account
    # id does: still equal for equal values, so it links exactly as before.
    long_pay, other_pay = "p" * 16_384, "p" * 16_383 + "q"
    found = EXTRACTOR.extract(
        {"x-payment-fingerprint": long_pay}, {"team": ["t" * 300, "short"]}, None, None
    )
    (pay,) = found["pay"]
    assert pay.startswith("long-") and len(pay) <= MAX_ACCOUNT_CHARS
    assert found["team"][0].startswith("long-") and found["team"][1] == "short"
    again = EXTRACTOR.extract({"x-payment-fingerprint": long_pay}, {}, None, None)
    assert again["pay"] == (pay,)
    other = EXTRACTOR.extract({"x-payment-fingerprint": other_pay}, {}, None, None)
    assert other["pay"] != (pay,)
    # A value of exactly the bound is kept as sent.
    exact = "e" * MAX_ACCOUNT_CHARS
    assert EXTRACTOR.extract({"x-payment-fingerprint": exact}, {}, None, None)["pay"] == (exact,)
