"""One replay pass: read the log, decide every line, write the decisions, tally the report."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import orjson

from ..policy.compiled import CompiledPolicy
from .engine import Engine
from .labels import Label
from .progress import Progress
from .reader import read_traffic
from .report import Tally


async def replay_file(
    traffic: str | Path,
    policy: CompiledPolicy,
    *,
    decisions: BinaryIO | None = None,
    labels: dict[str, Label] | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> Tally:
    """Replay ``traffic`` through ``policy`` (or a prepared ``engine``); decision lines go
    to ``decisions`` when given."""
    engine = engine if engine is not None else Engine(policy)
    tally = Tally(labels)
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    try:
        for entry in read_traffic(traffic):
            outcome = await engine.step(entry)
            if decisions is not None:
                decisions.write(dumps(outcome.line_dict(), option=newline))
            tally.add(outcome)
            if progress is not None:
                progress.advance(entry.size)
    finally:
        if progress is not None:
            progress.close()
        await engine.aclose()
    return tally
