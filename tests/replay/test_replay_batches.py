"""Batches in a replay: settled by the live path's rule (a created batch keeps its
reservation), bodies checked against the route's max_bytes, and body-less listings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replay_helpers import T0, record, small_policy

from hydraguard.inspect.dialects import DIALECTS
from hydraguard.inspect.facts import estimate_input_tokens
from hydraguard.replay.engine import Engine, Outcome
from hydraguard.replay.reader import Entry

TOKENS = "tier.default.tokens.1000000/minute"
BATCH = {
    "requests": [
        {"custom_id": "1", "params": {"max_tokens": 700, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}},
        {"custom_id": "2", "params": {"max_tokens": 900, "messages": [{"role": "user", "content": "Why is grass green?"}]}},
    ]
}  # fmt: skip
ESTIMATE = estimate_input_tokens(DIALECTS["anthropic-batches"].parse(BATCH), 4, 4)


def batch_record(status: int, **fields: Any) -> dict[str, Any]:
    # What the audit log writes for a batch: the settled charge as its usage.
    line = record("a", T0, path="/v1/messages/batches", body=BATCH)
    return {**line, "status": status, "usage": {"input_tokens": 5, "output_tokens": 1}, **fields}


async def replay(tmp_path: Path, *records: dict[str, Any]) -> tuple[list[Outcome], float]:
    """The outcomes, and the tokens account "a" holds afterwards."""
    engine = Engine(small_policy(tmp_path, requests="1000/minute"))
    outcomes = [await engine.step(Entry(i, 0, item)) for i, item in enumerate(records)]
    guard = engine.guard
    await engine.hydra.drain()
    plan = guard.gate.planner.plan("a", "default", 0)
    values = await guard.storage.primary.usage(plan.checks, engine.now)
    await engine.aclose()
    used = {limit.rule: value for limit, value in zip(plan.limits, values, strict=True)}
    return outcomes, used[TOKENS]


async def test_a_created_batch_serves_and_is_charged_its_reservation(tmp_path: Path) -> None:
    # The logged usage does not decide: the rule of the live path, on the replayed decision.
    [outcome], tokens = await replay(tmp_path, batch_record(200))
    assert outcome.admitted and outcome.output_tokens == 700 + 900
    assert tokens == ESTIMATE + 1600


async def test_a_failed_batch_creation_is_charged_its_input_only(tmp_path: Path) -> None:
    [outcome], tokens = await replay(tmp_path, batch_record(400))
    assert outcome.admitted and outcome.output_tokens == 0
    assert tokens == ESTIMATE


async def test_a_truncated_body_is_checked_against_the_routes_max_bytes(tmp_path: Path) -> None:
    def truncated(path: str, size: int) -> dict[str, Any]:
        body = {"_hydraguard_truncated": {"bytes": size, "dropped": ["requests"]}}
        return record("a", T0, path=path, body=body)

    outcomes, _ = await replay(
        tmp_path,
        truncated("/v1/messages/batches", 3_000_000),  # over body.max_bytes, under the route's
        truncated("/v1/messages/batches", 5_000_000),
        truncated("/v1/chat/completions", 3_000_000),
    )
    assert [o.admitted for o in outcomes] == [True, False, False]
    assert outcomes[1].error == "body of 5000000 bytes exceeds the route's max_bytes (4000000)"
    assert outcomes[2].error == "body of 3000000 bytes exceeds the route's max_bytes (1048576)"


async def test_a_listing_without_a_body_is_counted_like_live(tmp_path: Path) -> None:
    listing = {**record("a", T0, path="/v1/messages/batches"), "method": "GET", "body": None}
    malformed = {**record("a", T0, path="/v1/messages/batches"), "body": None}  # a POST
    outcomes, tokens = await replay(tmp_path, listing, malformed)
    assert outcomes[0].admitted and outcomes[0].error is None
    assert not outcomes[1].admitted and outcomes[1].error == "body is not a JSON object"
    assert tokens == 0
