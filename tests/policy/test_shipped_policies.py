"""Every policy we ship loads, and the packaged default is the one in policies/."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydraguard.cli import main
from hydraguard.policy.loader import default_policy_path, load_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "policies").rglob("*.yaml"))


def test_there_are_examples_besides_the_default() -> None:
    assert ROOT / "policies" / "default.yaml" in SHIPPED
    assert len(SHIPPED) >= 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path)]) == 0
    assert ": ok (policy" in capsys.readouterr().out


def test_packaged_default_matches_the_repository_copy() -> None:
    assert default_policy_path().read_text() == (ROOT / "policies" / "default.yaml").read_text()
    policy = load_policy()
    assert policy.name == "default"
    # The default reads the context headers of DESIGN.md.
    headers = {spec.header for spec in policy.clustering.signals.values() if spec.header}
    assert {"x-org-id", "x-payment-fingerprint", "x-device-fingerprint", "x-ja4"} <= headers
    assert policy.identity.account[0].header == "x-account-id"
    assert policy.identity.tier.header == "x-account-tier"
