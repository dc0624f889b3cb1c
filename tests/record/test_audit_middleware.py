"""The middleware writes the traffic-log format, and replay reads it back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from hydraguard import HydraGuard
from hydraguard.cli import main
from hydraguard.gateway.mock import create_mock_app
from hydraguard.policy.compiled import compile_policy
from hydraguard.policy.loader import parse_policy

POLICY = """
name: audited
tiers:
  default:
    requests: "2/minute"
audit:
  enabled: true
  path: {path}
"""


async def test_audit_log_lines_are_the_traffic_format_and_replay_reproduces_them(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY.format(path=log))
    policy = compile_policy(parse_policy(policy_file.read_text()), str(policy_file))
    guard = HydraGuard(create_mock_app(), policy=policy, registry=CollectorRegistry())
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    headers = {"authorization": "Bearer sk-very-secret", "x-payment-fingerprint": "card-1"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as client:
        statuses = [
            (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code
            for _ in range(3)
        ]
        # A route no policy route names is not a model call: not logged.
        await client.post("/v1/other", json={})
    await guard.aclose()
    assert statuses == [200, 200, 429]

    text = log.read_text()
    assert "sk-very-secret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["status"] for line in lines] == [200, 200, 429]
    first = lines[0]
    assert first["account"].startswith("key-")
    assert first["headers"]["x-payment-fingerprint"] == "card-1"
    assert "authorization" not in first["headers"]
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["body"] == body
    assert first["usage"]["output_tokens"] == 5
    assert lines[2]["usage"] is None
    assert lines[0]["ts"] <= lines[1]["ts"] <= lines[2]["ts"]

    decisions = tmp_path / "decisions.jsonl"
    args = ["replay", str(log), "--policy", str(policy_file), "--decisions", str(decisions)]
    assert await asyncio.to_thread(main, args) == 0  # the CLI runs its own event loop
    replayed = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [d["admitted"] for d in replayed] == [True, True, False]
    assert replayed[2]["rule"] == "tier.default.requests.2/minute"
    assert replayed[0]["output_tokens"] == 5
