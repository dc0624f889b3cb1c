from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from replay_helpers import T0, record, small_policy, write_traffic

from hydraguard.guard import Guard
from hydraguard.replay.engine import Engine
from hydraguard.replay.reader import Entry, read_traffic
from hydraguard.replay.run import BATCH, replay_file


async def decide_all(engine: Engine, records: list[dict[str, Any]]) -> list[Any]:
    outcomes = []
    for i, item in enumerate(records):
        outcomes.append(await engine.step(Entry(i, 0, item)))
    await engine.aclose()
    return outcomes


async def test_replay_runs_the_live_guard_on_the_log_clock(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path, requests="2/minute"))
    assert isinstance(engine.guard, Guard)
    outcomes = await decide_all(
        engine,
        [record("a", T0), record("a", T0 + 1), record("a", T0 + 2), record("b", T0 + 3),
         record("a", T0 + 130)],
    )  # fmt: skip
    assert [o.admitted for o in outcomes] == [True, True, False, True, True]
    refused = outcomes[2]
    assert refused.output_tokens == 0 and refused.requested == 50
    assert refused.rule == "tier.default.requests.2/minute"
    assert [o.output_tokens for o in outcomes] == [50, 50, 0, 50, 50]


async def test_tier_comes_from_the_logged_headers(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path, requests="1/minute"))
    outcomes = await decide_all(engine, [record("p", T0 + i, tier="pro") for i in range(5)])
    assert all(o.admitted for o in outcomes)  # pro allows 1000/minute


async def test_refused_requests_charge_nothing_and_admitted_ones_settle_to_usage(
    tmp_path: Path,
) -> None:
    # 1000 tokens a minute: the first request reserves 10 + 600 but settles to its logged
    # 10 + 100; the second (10 + 950) does not fit and is refused; the third (10 + 600) fits
    # only because the first was reconciled and the refused one charged nothing.
    engine = Engine(small_policy(tmp_path, requests="100/minute", tokens="1000/minute"))
    outcomes = await decide_all(
        engine,
        [
            record("a", T0, max_tokens=600, output=100),
            record("a", T0 + 1, max_tokens=950, output=900),
            record("a", T0 + 2, max_tokens=600, output=100),
        ],
    )
    assert [o.admitted for o in outcomes] == [True, False, True]
    assert outcomes[1].rule == "tier.default.tokens.1000/minute"


async def test_unrouted_paths_pass_and_invalid_bodies_are_reported(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path))
    outcomes = await decide_all(
        engine,
        [
            record("a", T0, path="/health", output=7),
            record("a", T0 + 1, body=["not", "an", "object"]),
            record("a", T0 + 2, path="/v1/embeddings", body="anything"),  # generic: body unread
        ],
    )
    passed, invalid, generic = outcomes
    assert passed.admitted and not passed.routed and passed.output_tokens == 7
    assert not invalid.admitted and invalid.error == "body is not a JSON object"
    assert generic.admitted and generic.error is None


async def test_truncated_body_larger_than_the_policy_allows_is_refused_like_live(
    tmp_path: Path,
) -> None:
    engine = Engine(small_policy(tmp_path))
    body = {"model": "m", "_hydraguard_truncated": {"bytes": 5_000_000, "dropped": ["messages"]}}
    [outcome] = await decide_all(engine, [record("a", T0, body=body)])
    assert not outcome.admitted and "exceeds the route's max_bytes" in (outcome.error or "")


async def test_malformed_entries_become_error_lines(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path))
    outcome = await engine.step(Entry(4, 10, None, "not valid JSON: x"))
    await engine.aclose()
    assert outcome.line_dict() == {
        "line": 4, "account": None, "cluster": None, "admitted": False, "output_tokens": 0,
        "actions": [], "rule": None, "risk": 0.0, "error": "not valid JSON: x",
    }  # fmt: skip


async def test_the_clock_never_goes_back(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path, requests="2/minute"))
    # Out of order by a second (an audit log is written at completion): still one minute.
    outcomes = await decide_all(
        engine, [record("a", T0 + 5), record("a", T0 + 4), record("a", T0 + 6)]
    )
    assert engine.now == T0 + 6
    assert [o.admitted for o in outcomes] == [True, True, False]
    assert outcomes[1].ts == T0 + 4  # the report still sees the logged arrival


class CappingGuard:
    """Stands in for Guard to check the engine's side of an output cap."""

    def __init__(self, real: Guard) -> None:
        self.identifier = real.identifier
        self.completed: list[tuple[int, int, int]] = []

    async def decide(self, identity: Any, facts: Any, now: float) -> Any:
        return SimpleNamespace(
            admitted=True, output_cap=30, input_estimate=5, cluster="c-1",
            actions=("cap_max_tokens",), rule="cap-output", risk=0.71234567, shadow_denied=False,
        )  # fmt: skip

    def complete(self, decision: Any, facts: Any, input_tokens: int, output_tokens: int,
                 status: int, now: float) -> None:  # fmt: skip
        self.completed.append((input_tokens, output_tokens, status))


async def test_a_capped_request_serves_at_most_the_cap_and_is_charged_that(tmp_path: Path) -> None:
    engine = Engine(small_policy(tmp_path))
    stub = CappingGuard(engine.guard)
    engine.guard = stub  # type: ignore[assignment]
    outcomes = await decide_all(
        engine, [record("a", T0, output=80), record("a", T0 + 1, output=20)]
    )
    assert [o.output_tokens for o in outcomes] == [30, 20]
    assert [o.requested for o in outcomes] == [80, 20]
    assert stub.completed == [(10, 30, 200), (10, 20, 200)]
    line = outcomes[0].line_dict()
    assert (
        line["cluster"] == "c-1"
        and line["actions"] == ["cap_max_tokens"]
        and line["rule"] == "cap-output"
    )
    assert line["risk"] == 0.7123


async def test_a_request_hydraguard_answered_400_itself_is_given_back_and_not_learnt(
    tmp_path: Path,
) -> None:
    # Admitted, then too deep to rewrite: the live path answers 400 without forwarding,
    # gives the reservation back and learns nothing, and logs it without usage (an
    # upstream's 400 is logged with usage). Replay charged its input estimate and learnt.
    engine = Engine(small_policy(tmp_path, requests="100/minute", tokens="1000/minute"))
    completed: list[int] = []
    complete = engine.guard.complete

    def noted(decision: Any, facts: Any, input_tokens: int, *rest: Any) -> None:
        completed.append(input_tokens)  # completed: settled to usage, and learnt from
        complete(decision, facts, input_tokens, *rest)

    engine.guard.complete = noted  # type: ignore[method-assign]
    too_deep = {**record("a", T0, max_tokens=900), "status": 400, "usage": None}
    # "hello there", one message: 3 + 4 tokens of input estimate, so this one reserves the
    # whole minute's 1000 tokens: it fits only if the first charged nothing.
    whole = record("a", T0 + 1, max_tokens=993)
    upstream_400 = {
        **record("a", T0 + 70, max_tokens=900),
        "status": 400,
        "usage": {"input_tokens": 10, "output_tokens": 0},
    }
    outcomes = await decide_all(engine, [too_deep, whole, upstream_400])
    assert [o.admitted for o in outcomes] == [True, True, True]
    assert [o.output_tokens for o in outcomes] == [0, 50, 0]
    assert completed == [10, 10]  # the second and the third: the first was never completed


async def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    records = [record(f"acct-{i % 7}", T0 + i * 3.5, output=i * 10) for i in range(300)]
    traffic = write_traffic(tmp_path / "t.jsonl", [*records[:100], "garbage", *records[100:]])
    policy = small_policy(tmp_path, requests="5/minute")
    outputs = []
    for _ in range(2):
        sink = io.BytesIO()
        tally = await replay_file(traffic, policy, decisions=sink)
        outputs.append(sink.getvalue())
        assert tally.lines == 301 and tally.invalid == 1
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == len(list(read_traffic(traffic)))


async def test_decision_lines_are_written_in_batches_without_losing_the_tail(
    tmp_path: Path,
) -> None:
    # More lines than one write batch, and not a multiple of it, with a malformed one
    # in each batch: every line is written once, in order, same bytes as line by line.
    records: list[dict[str, Any] | str] = [
        record(f"acct-{i % 11}", T0 + i * 0.5, output=i % 90) for i in range(2 * BATCH + 7)
    ]
    records[3] = records[BATCH + 3] = "not json"
    traffic = write_traffic(tmp_path / "t.jsonl", records)
    policy = small_policy(tmp_path, requests="30/minute")
    sink = io.BytesIO()
    tally = await replay_file(traffic, policy, decisions=sink)
    lines = sink.getvalue().splitlines(keepends=True)
    assert len(lines) == tally.lines == 2 * BATCH + 7 and tally.invalid == 2
    engine = Engine(policy)
    expected = [
        orjson.dumps((await engine.step(entry)).line_dict(), option=orjson.OPT_APPEND_NEWLINE)
        for entry in read_traffic(traffic)
    ]
    await engine.aclose()
    assert lines == expected
