from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
from simulate_helpers import SMALL, Traffic

from hydraguard.simulate import command
from hydraguard.simulate.generate import write
from hydraguard.simulate.scenario import Scenario

CONTEXT_HEADERS = {
    "x-account-id",
    "x-account-tier",
    "x-org-id",
    "x-payment-fingerprint",
    "x-device-fingerprint",
    "x-ja4",
    "user-agent",
}
PATHS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


def _text_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    scenario = Scenario(
        seed=3,
        hours=3,
        ordinary=60,
        developers=4,
        teams=2,
        students=10,
        heavy=2,
        reasoning_accounts=30,
        agentic_accounts=8,
        prober_accounts=10,
    )
    outputs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out, labels = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels.json"
        write(Scenario(**{**scenario.__dict__, "seed": seed}), out, labels)
        outputs.append((out.read_bytes(), labels.read_bytes()))
    assert outputs[0][0]  # not trivially equal because empty
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[2][0]


def test_every_record_follows_the_traffic_log_format(small: Traffic) -> None:
    assert len(small.records) > 5000
    previous = -math.inf
    for record in small.records:
        assert list(record) == [
            "ts",
            "account",
            "ip",
            "headers",
            "method",
            "path",
            "body",
            "status",
            "usage",
        ]
        assert isinstance(record["ts"], float)
        assert previous <= record["ts"] < SMALL.end and record["ts"] >= SMALL.start
        previous = record["ts"]
        headers = record["headers"]
        assert set(headers) <= CONTEXT_HEADERS
        assert CONTEXT_HEADERS - {"x-org-id"} <= set(headers)
        assert all(k == k.lower() and isinstance(v, str) and v for k, v in headers.items())
        assert headers["x-account-id"] == record["account"]
        assert record["ip"].count(".") == 3
        assert record["method"] == "POST" and record["status"] == 200
        body, dialect = record["body"], PATHS[record["path"]]
        assert isinstance(body["model"], str) and body["messages"]
        assert body["messages"][-1]["role"] in ("user", "tool")
        if dialect == "anthropic":
            assert isinstance(body["max_tokens"], int)
            assert "logprobs" not in body and all(m["role"] != "system" for m in body["messages"])
        usage = record["usage"]
        assert set(usage) == {"input_tokens", "output_tokens"}
        assert 1 <= usage["output_tokens"] <= body.get("max_tokens", 4096) * body.get("n", 1)
        chars = _text_chars(body["messages"]) + _text_chars(body.get("system"))
        chars += _text_chars(body.get("tools"))
        assert chars / 4 <= usage["input_tokens"] <= chars / 4 + 4 * len(body["messages"]) + 1


def test_labels_cover_every_account_with_class_kind_and_campaign(small: Traffic) -> None:
    assert {r["account"] for r in small.records} <= set(small.labels)
    assert set(small.labels) == {a.id for a in small.population.accounts()}
    for label in small.labels.values():
        assert set(label) == {"class", "kind", "campaign"}
        assert label["class"] in ("benign", "attacker")
        assert (label["class"] == "attacker") == (label["campaign"] is not None)
    campaigns = {v["campaign"] for v in small.labels.values()} - {None}
    assert campaigns == {"hydra-reasoning-1", "hydra-agentic-1", "hydra-probe-1"}


def test_only_team_accounts_send_an_org_id(small: Traffic) -> None:
    for record in small.records:
        is_team = small.labels[record["account"]]["kind"] == "team"
        assert ("x-org-id" in record["headers"]) == is_team


def test_run_writes_traffic_and_labels_and_returns_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    command.configure(parser)
    out = tmp_path / "traffic.jsonl"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--hours",
            "2",
            "--benign",
            "120",
            "--attackers",
            "40",
            "--seed",
            "5",
            "--prober-rate",
            "50",
        ]
    )
    assert command.run(args) == 0
    labels = json.loads((tmp_path / "traffic.labels.json").read_text())
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(line)["account"] in labels for line in lines)
    assert sum(v["class"] == "attacker" for v in labels.values()) == 40
    assert 110 <= sum(v["class"] == "benign" for v in labels.values()) <= 130
    assert f"{len(lines)} requests" in capsys.readouterr().out


def test_run_rejects_an_impossible_scenario(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["--out", str(tmp_path / "t.jsonl"), "--nat-share", "1.5"])
    assert command.run(args) == 2
    assert not (tmp_path / "t.jsonl").exists()
