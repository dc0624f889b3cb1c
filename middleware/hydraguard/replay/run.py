"""One replay pass: read the log, decide every line, write the decisions, tally the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from ..policy.compiled import CompiledPolicy
from .engine import Engine, decision_line, malformed
from .labels import Label
from .progress import Progress
from .reader import TrafficLogs
from .report import Tally

# Decision lines are written this many at a time (one write call per batch, not per line);
# the progress bar hears about the position as often.
BATCH = 2048


async def replay_file(
    traffic: str | Path | Sequence[str | Path],
    policy: CompiledPolicy,
    *,
    decisions: BinaryIO | None = None,
    labels: dict[str, Label] | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    names: Sequence[str] | None = None,
) -> Tally:
    """Replay ``traffic`` (one log, or several merged by timestamp: ``TrafficLogs``) through
    ``policy`` (or a prepared ``engine``); decision lines go to ``decisions`` when given.
    From several logs, each decision line also says where its line came from (``source``:
    ``path:line``, the path as ``names`` call it) and malformed lines are tallied with it.

    This loop runs once per logged request and is replay's own cost, so it is flat: the
    engine hands back a plain tuple that goes straight into the decision line and the
    tally, with no object per line in between."""
    engine = engine if engine is not None else Engine(policy)
    tally = Tally(labels)
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    decide, count, add_invalid = engine.decide, tally.count, tally.add_invalid
    pending: list[bytes] = []
    keep = pending.append
    number = -1
    try:
        with TrafficLogs(traffic, names) as logs:
            merged, where = logs.merged, logs.where
            for number, (record, problem) in enumerate(logs.lines()):
                (account, cluster, admitted, served, actions, rule, risk, error, ts, requested,
                 shadow_denied, routed, shadow_actions) = (
                    await decide(record) if record is not None else malformed(problem)
                )  # fmt: skip
                if decisions is not None:
                    line = decision_line(
                        number, account, cluster, admitted, served, actions, rule, risk, error
                    )
                    if merged:
                        line["source"] = where()
                    keep(dumps(line, option=newline))
                if error is None:
                    count(
                        account, cluster, admitted, served, actions, rule, ts, requested,  # type: ignore[arg-type]  # a decided record has its account
                        shadow_denied, routed, shadow_actions,
                    )  # fmt: skip
                else:
                    add_invalid(number, error, where() if merged else None)
                if not (number + 1) % BATCH:
                    if decisions is not None:
                        decisions.write(b"".join(pending))
                        pending.clear()
                    if progress is not None:
                        progress.update(logs.tell(), number + 1)
            if progress is not None:
                progress.update(logs.tell(), number + 1)
        if decisions is not None and pending:
            decisions.write(b"".join(pending))
    finally:
        if progress is not None:
            progress.close()
        await engine.aclose()
    return tally
