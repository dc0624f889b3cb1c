"""simulate -> replay (shipped default policy) -> report, on a small scenario.

Checks that the report is whole and its numbers add up; the efficacy thresholds
(leak, benign accounts affected) are asserted where the default policy is tuned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import read_lines

from hydraguard.cli import main

DEFAULT_POLICY = str(Path(__file__).parents[2] / "policies" / "default.yaml")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("pipeline")
    traffic, labels = tmp / "t.jsonl", tmp / "l.json"
    decisions, report = tmp / "d.jsonl", tmp / "r.json"
    args = ["simulate", "--out", str(traffic), "--labels", str(labels),
            "--benign", "300", "--attackers", "120", "--hours", "3", "--seed", "5"]  # fmt: skip
    assert main(args) == 0
    args = ["replay", str(traffic), "--policy", DEFAULT_POLICY, "--decisions", str(decisions),
            "--labels", str(labels), "--report", str(report)]  # fmt: skip
    assert main(args) == 0
    return {
        "traffic": read_lines(traffic),
        "labels": json.loads(labels.read_text()),
        "decisions": read_lines(decisions),
        "report": json.loads(report.read_text())["policies"][DEFAULT_POLICY],
    }


def test_one_decision_per_request_for_the_same_account(pipeline: dict[str, Any]) -> None:
    traffic, decisions = pipeline["traffic"], pipeline["decisions"]
    assert len(decisions) == len(traffic) > 1000
    assert all(d["account"] == r["account"] for d, r in zip(decisions, traffic, strict=True))
    for d, r in zip(decisions, traffic, strict=True):
        assert 0 <= d["output_tokens"] <= r["usage"]["output_tokens"]
        assert d["admitted"] or d["output_tokens"] == 0
        assert 0.0 <= d["risk"] <= 1.0


def test_report_counts_add_up(pipeline: dict[str, Any]) -> None:
    report, traffic, decisions = pipeline["report"], pipeline["traffic"], pipeline["decisions"]
    totals = report["totals"]
    assert totals["lines"] == len(traffic) and totals["invalid"] == 0
    assert totals["admitted"] + totals["refused"] == totals["lines"]
    assert totals["admitted"] == sum(d["admitted"] for d in decisions)
    assert totals["output_tokens_served"] == sum(d["output_tokens"] for d in decisions)
    assert totals["output_tokens_requested"] == sum(r["usage"]["output_tokens"] for r in traffic)
    assert totals["output_tokens_served"] <= totals["output_tokens_requested"]
    classes = report["classes"]
    assert set(classes) == {"benign", "attacker"}
    assert sum(c["requests"] for c in classes.values()) == totals["lines"]
    assert (
        sum(c["output_tokens_served"] for c in classes.values()) == totals["output_tokens_served"]
    )


def test_efficacy_is_consistent_with_the_classes(pipeline: dict[str, Any]) -> None:
    report, labels = pipeline["report"], pipeline["labels"]
    efficacy, attacker, benign = (
        report["efficacy"],
        report["classes"]["attacker"],
        report["classes"]["benign"],
    )
    assert 0.0 <= efficacy["leak"] <= 1.0
    assert efficacy["attacker_output_tokens_served"] == attacker["output_tokens_served"]
    assert efficacy["attacker_output_tokens_requested"] == attacker["output_tokens_requested"]
    assert efficacy["benign_accounts"] == benign["active_accounts"]
    assert efficacy["benign_accounts_affected"] <= efficacy["benign_accounts"]
    assert efficacy["benign_accounts_labelled"] == sum(
        v["class"] == "benign" for v in labels.values()
    )
    assert efficacy["benign_requests_refused"] <= efficacy["benign_requests"]
    campaigns = {v["campaign"] for v in labels.values() if v["campaign"]}
    assert set(report["campaigns"]) == campaigns
    for campaign in report["campaigns"].values():
        ttfa = campaign["time_to_first_action"]
        assert ttfa is None or ttfa >= 0
        assert campaign["output_tokens_served"] <= campaign["output_tokens_requested"]
    assert sum(c["requests"] for c in report["campaigns"].values()) == attacker["requests"]
