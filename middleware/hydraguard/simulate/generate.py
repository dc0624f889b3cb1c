"""Generate a scenario's traffic in arrival order, and write it with its labels.

Each actor (a benign account, an agentic account, a campaign dispatcher) yields its own
records in time order from its own seeded rng; a heap merge interleaves them, so memory
holds one pending record per actor, not the day's traffic.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydraguard.simulate import attacks, benign
from hydraguard.simulate.population import Population, build
from hydraguard.simulate.scenario import Scenario

Label = dict[str, str | None]
# One encoder for every line: json.dumps with separators would build a new one per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class Stats:
    lines: int
    accounts: int
    benign_accounts: int
    attacker_accounts: int
    lines_by_class: dict[str, int] = field(default_factory=dict)
    lines_by_kind: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.lines_by_kind.items()))
        return (
            f"{self.lines} requests from {self.accounts} accounts "
            f"({self.benign_accounts} benign, {self.attacker_accounts} attackers); "
            f"benign {self.lines_by_class.get('benign', 0)}, "
            f"attacker {self.lines_by_class.get('attacker', 0)}; by kind: {kinds}"
        )


def labels(population: Population) -> dict[str, Label]:
    """``{account: {"class": "benign"|"attacker", "kind": persona or campaign kind,
    "campaign": campaign name or None}}``."""
    return {a.id: a.label() for a in population.accounts()}


def _streams(population: Population, scenario: Scenario) -> list[Iterator[dict[str, Any]]]:
    streams = [benign.traffic(a, scenario) for a in population.benign]
    streams += [
        attacks.ACTORS[c.kind](c, scenario)
        for c in population.campaigns
        if c.accounts and c.rate > 0
    ]
    return streams


def generate(scenario: Scenario) -> tuple[Iterator[dict[str, Any]], dict[str, Label]]:
    """The scenario's requests in ``ts`` order (lazily) and every account's label."""
    population = build(scenario)
    records = heapq.merge(*_streams(population, scenario), key=lambda r: r["ts"])
    return records, labels(population)


def write(scenario: Scenario, out: str | Path, labels_path: str | Path | None = None) -> Stats:
    """Write the traffic log (JSON lines) and, when asked, the labels (one JSON object)."""
    records, account_labels = generate(scenario)
    by_class: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    with open(out, "w", encoding="utf-8") as fh:
        for record in records:
            label = account_labels[record["account"]]
            by_class[str(label["class"])] += 1
            by_kind[str(label["kind"])] += 1
            fh.write(_encode(record) + "\n")
    if labels_path is not None:
        with open(labels_path, "w", encoding="utf-8") as fh:
            json.dump(account_labels, fh, indent=1, sort_keys=True)
            fh.write("\n")
    attackers = sum(1 for v in account_labels.values() if v["class"] == "attacker")
    return Stats(
        lines=by_class.total(),
        accounts=len(account_labels),
        benign_accounts=len(account_labels) - attackers,
        attacker_accounts=attackers,
        lines_by_class=dict(by_class),
        lines_by_kind=dict(by_kind),
    )
