"""Property: the usage HydraGuard settles for an answer (JSON or SSE, plain or compressed) is
the same however the bytes are cut into chunks, equals the usage the answer reports when
it reports one, else the README's estimate; it is settled exactly once, never negative;
and the client gets every chunk the app sent, unchanged and in order."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_harness import (
    MARK,
    Downstream,
    Reply,
    attach_settle_counter,
    build,
    fuzz_settings,
    run,
    settled_metric,
    usage_of,
)
from fuzz_responses import (
    CODINGS,
    INPUT_ESTIMATE,
    PATHS,
    Answer,
    Expected,
    documented_charge,
    json_answers,
    reference,
    request_body,
    sse_answers,
    wire_chunks,
)


async def serve(
    kit: SimpleNamespace, answer: Answer, coding: bytes, chunks: list[bytes], status: int
) -> tuple[float, list[int], float]:
    """Serve ``chunks`` as the app's answer; what was settled, by usage, settle calls and metric."""
    kind = b"text/event-stream; charset=utf-8" if answer.sse else b"application/json"
    headers = [(b"content-type", kind)]
    if coding != b"identity":
        headers.append((b"content-encoding", CODINGS[coding][1]))
    app = Downstream(Reply(status, headers, chunks))
    guard = build(app)
    calls = attach_settle_counter(guard)
    try:
        scope = kit.http_scope(PATHS[answer.dialect], headers=[(b"x-account-id", b"fuzz")])
        sent = await kit.call_asgi(guard, scope, request_body(answer.dialect))
        usage = await usage_of(guard, "fuzz")
        metric = settled_metric(guard)
    finally:
        await guard.aclose()
    start, *bodies = sent
    assert start["status"] == status
    assert headers[0] in start["headers"] and MARK in start["headers"]
    assert [m["body"] for m in bodies] == [*chunks, b""]  # chunk for chunk, in order
    assert [m["more_body"] for m in bodies] == [True] * len(chunks) + [False]
    assert usage["concurrency"] == 0 and usage["requests"] == 1
    return usage["tokens"], calls, metric


@fuzz_settings(300)
@given(
    data=st.data(),
    dialect=st.sampled_from(sorted(PATHS)),
    sse=st.booleans(),
    coding=st.sampled_from(sorted(CODINGS)),
    status=st.sampled_from([200, 200, 200, 201, 400, 429, 500]),
)
def test_settled_usage_whatever_the_chunks(
    kit: SimpleNamespace, data: Any, dialect: str, sse: bool, coding: bytes, status: int
) -> None:
    answer = data.draw(sse_answers(dialect) if sse else json_answers(dialect), label="answer")
    wire, cut = data.draw(wire_chunks(answer.body, coding), label="chunks")
    unreadable = coding == b"br"
    said = Expected() if unreadable else reference(answer)
    if answer.clean and not unreadable:
        assert said == answer.expected  # the reference reads what the generator meant
    expected = documented_charge(said, status, len(answer.body), unreadable, INPUT_ESTIMATE)
    source = "usage" if said.input is not None and said.output is not None else "estimate"
    event(f"{'sse' if sse else 'json'} {coding.decode()} settled by {source}")
    for chunks in ([wire], cut):
        tokens, calls, metric = run(lambda c=chunks: serve(kit, answer, coding, c, status))
        assert calls == [expected], (calls, expected, said)
        # Windows and metrics count in doubles: exact up to 2^53, a usage may add up past it.
        assert math.isclose(tokens, expected, rel_tol=2**-50)
        assert math.isclose(metric, expected, rel_tol=2**-50)
        assert expected >= 0
        if said.deltas and source == "estimate":  # text was served: never zero output
            assert expected - (INPUT_ESTIMATE if said.input is None else said.input) >= 1
