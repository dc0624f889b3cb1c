"""Shared helpers for the replay tests: small policies, traffic records, files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from hydraguard.policy.compiled import CompiledPolicy
from hydraguard.policy.loader import load_policy

T0 = 1_800_000_000.0  # a minute boundary: window arithmetic in the tests is exact

POLICY = """
name: {name}
identity:
  account:
    - header: x-account-id
  tier:
    header: x-account-tier
    default: default
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
  - path: /v1/messages
    dialect: anthropic-messages
  - path: /v1/messages/batches
    dialect: anthropic-batches
    max_bytes: 4000000
  - path: /v1/embeddings
    dialect: generic
tiers:
  default:
    requests: "{requests}"
    tokens: "{tokens}"
    max_output_tokens: 100
  pro:
    requests: "1000/minute"
    tokens: "1000000/minute"
    max_output_tokens: 100
"""


def policy_file(
    tmp_path: Path, name: str = "small", requests: str = "2/minute", tokens: str = "1000000/minute"
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(POLICY.format(name=name, requests=requests, tokens=tokens)))
    return path


def small_policy(tmp_path: Path, **limits: str) -> CompiledPolicy:
    return load_policy(policy_file(tmp_path, **limits))


def record(
    account: str,
    ts: float,
    *,
    output: int = 50,
    max_tokens: int | None = None,
    path: str = "/v1/chat/completions",
    tier: str | None = None,
    body: Any = None,
) -> dict[str, Any]:
    headers = {"x-account-id": account}
    if tier:
        headers["x-account-tier"] = tier
    if body is None:
        body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
    return {
        "ts": ts,
        "account": account,
        "ip": "203.0.113.7",
        "headers": headers,
        "method": "POST",
        "path": path,
        "body": body,
        "status": 200,
        "usage": {"input_tokens": 10, "output_tokens": output},
    }


def write_traffic(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    """Records as JSON lines; a str is written verbatim (for malformed lines)."""
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
