"""Shared scenario and helpers for the simulate tests (conftest holds the fixture)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hydraguard.simulate.population import Account, Population
from hydraguard.simulate.scenario import Scenario

SMALL = Scenario(
    seed=7,
    hours=24.0,
    ordinary=200,
    developers=10,
    teams=4,
    team_size=5,
    students=40,
    heavy=5,
    reasoning_accounts=120,
    reasoning_rate=200.0,
    agentic_accounts=24,
    agentic_rate=60.0,
    prober_accounts=30,
    prober_rate=200.0,
)

STEP_BY_STEP = re.compile(
    r"step by step|show your work|show all (?:your reasoning|the steps)|chain of thought|"
    r"internal reasoning",
    re.IGNORECASE,
)


@dataclass
class Traffic:
    scenario: Scenario
    records: list[dict[str, Any]]
    labels: dict[str, dict[str, Any]]
    population: Population

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if self.labels[r["account"]]["kind"] == kind]

    def accounts(self, kind: str) -> list[Account]:
        return [a for a in self.population.accounts() if a.kind == kind]


def last_user_text(record: dict[str, Any]) -> str:
    """The newest user turn of a request, as plain text."""
    for message in reversed(record["body"]["messages"]):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return " ".join(str(part.get("text", part.get("content", ""))) for part in content)
    raise AssertionError("no user message")
