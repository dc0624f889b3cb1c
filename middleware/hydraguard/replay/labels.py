"""Account labels for a replay report: ``{account: "benign" | "attacker"}`` or, as
``hydraguard simulate`` writes them, ``{account: {"class": ..., "kind": ..., "campaign": ...}}``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CLASSES = ("benign", "attacker")


@dataclass(frozen=True, slots=True)
class Label:
    klass: str  # "benign" | "attacker"
    campaign: str | None = None
    kind: str | None = None


def parse_labels(data: object) -> dict[str, Label]:
    if not isinstance(data, dict):
        raise ValueError("labels must be a JSON object mapping account id to a label")
    labels: dict[str, Label] = {}
    for account, value in data.items():
        if isinstance(value, str):
            value = {"class": value}
        if not isinstance(value, dict) or value.get("class") not in CLASSES:
            raise ValueError(
                f"label of {account!r}: expected 'benign' or 'attacker', got {value!r}"
            )
        campaign, kind = value.get("campaign"), value.get("kind")
        labels[account] = Label(
            value["class"],
            campaign if isinstance(campaign, str) else None,
            kind if isinstance(kind, str) else None,
        )
    return labels


def load_labels(path: str | Path) -> dict[str, Label]:
    with open(path, encoding="utf-8") as fh:
        return parse_labels(json.load(fh))
