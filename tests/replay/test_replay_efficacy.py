"""The efficacy target of the shipped default policy, on a small simulated day.

The README's table is measured on ``hydraguard simulate``'s default scenario (about
125k requests, a minute to replay); this is the same mix scaled down to about 300
benign and 100 attacker accounts over a whole day, so every detector gets the same
kind of evidence and a campaign's detection delay weighs as much as it does there.
Fixed seed: simulate and replay are deterministic, so the numbers are the same on
every run (leak ~2.5%, no benign account affected when this was written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hydraguard.cli import main

DEFAULT_POLICY = str(Path(__file__).parents[2] / "policies" / "default.yaml")
MAX_LEAK = 0.05  # attacker output tokens served / requested
MAX_BENIGN_AFFECTED = 0.005  # benign accounts refused or degraded (flag does not count)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("efficacy")
    traffic, labels, out = tmp / "t.jsonl", tmp / "l.json", tmp / "r.json"
    args = ["simulate", "--out", str(traffic), "--labels", str(labels),
            "--benign", "300", "--attackers", "100", "--hours", "24", "--seed", "0"]  # fmt: skip
    assert main(args) == 0
    args = ["replay", str(traffic), "--policy", DEFAULT_POLICY, "--decisions", str(tmp / "d.jsonl"),
            "--labels", str(labels), "--report", str(out)]  # fmt: skip
    assert main(args) == 0
    found: dict[str, Any] = json.loads(out.read_text())["policies"][DEFAULT_POLICY]
    return found


def test_attacker_leak_is_at_most_five_percent(report: dict[str, Any]) -> None:
    efficacy = report["efficacy"]
    assert efficacy["attacker_output_tokens_requested"] > 1_000_000
    assert efficacy["leak"] <= MAX_LEAK


def test_benign_accounts_affected_are_at_most_half_a_percent(report: dict[str, Any]) -> None:
    efficacy = report["efficacy"]
    assert efficacy["benign_accounts"] >= 200
    assert efficacy["benign_accounts_affected_share"] <= MAX_BENIGN_AFFECTED
    assert efficacy["benign_requests_refused"] <= 0.001 * efficacy["benign_requests"]


def test_every_campaign_is_acted_on_within_the_first_hour(report: dict[str, Any]) -> None:
    campaigns = report["campaigns"]
    kinds = {c["kind"] for c in campaigns.values()}
    assert kinds == {"reasoning_distiller", "agentic_distiller", "logprob_prober"}
    for name, campaign in campaigns.items():
        assert campaign["time_to_first_action"] is not None, name
        assert campaign["time_to_first_action"] <= 3600, name
        # No campaign gets most of what it asked for, the token-light probes included.
        assert campaign["output_tokens_served_share"] <= 0.25, name


@pytest.fixture(scope="module")
def diluted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reasoning hydra spread thin: 300 accounts at under one request an hour each, so
    its card clusters of ~12 accounts send ~10 requests an hour, as in the README's diluted
    scenario (1,500 accounts) scaled down with the rest of the mix."""
    tmp = tmp_path_factory.mktemp("diluted")
    traffic, labels, out = tmp / "t.jsonl", tmp / "l.json", tmp / "r.json"
    args = ["simulate", "--out", str(traffic), "--labels", str(labels),
            "--benign", "300", "--attackers", "100", "--hours", "24", "--seed", "0",
            "--reasoning-accounts", "300", "--reasoning-rate", "240",
            "--proxy-subnets", "200", "--proxy-addresses", "400",
            "--student-step-share", "0.5", "--company-card-share", "0.8", "--nat-share", "0.2"]  # fmt: skip
    assert main(args) == 0
    args = ["replay", str(traffic), "--policy", DEFAULT_POLICY, "--decisions", str(tmp / "d.jsonl"),
            "--labels", str(labels), "--report", str(out)]  # fmt: skip
    assert main(args) == 0
    found: dict[str, Any] = json.loads(out.read_text())["policies"][DEFAULT_POLICY]
    return found


def test_a_diluted_reasoning_hydra_is_held_down(diluted: dict[str, Any]) -> None:
    # 8.3% served when a block started only at the next request's assessment (a card cluster
    # sending every ~6-12 minutes decayed under the block between rescores) and a lapsed
    # block waited for rescore_every requests; 6.5% since (the rest: each cluster's first
    # dozen requests, before its detectors have min_events of evidence).
    reasoning = next(c for c in diluted["campaigns"].values() if c["kind"] == "reasoning_distiller")
    assert reasoning["accounts"] == 300
    assert reasoning["output_tokens_served_share"] <= 0.075
    efficacy = diluted["efficacy"]
    assert efficacy["leak"] <= 0.075
    assert efficacy["benign_accounts_affected_share"] <= MAX_BENIGN_AFFECTED
    assert efficacy["benign_requests_refused"] <= 0.001 * efficacy["benign_requests"]
