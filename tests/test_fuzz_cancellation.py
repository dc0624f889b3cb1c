"""Property: however a request ends — the app raising at any point, the client leaving
mid-stream (the server cancels the app, or its send raises), the client leaving while the
request is held or before its body is in, the request cancelled after any number of
event-loop turns (on Redis: while its admission waits) — its concurrency slot is released
(a tier of one slot admits again), its token reservation is settled exactly once, to the
README's estimate of what was streamed, and only the app's own error (or the
cancellation) comes out of HydraGuard."""

from __future__ import annotations

import asyncio
import itertools
import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_harness import (
    DELAYING,
    PLAIN,
    AppFailed,
    Downstream,
    Reply,
    attach_settle_counter,
    build,
    fuzz_settings,
    run,
    usage_of,
)
from fuzz_responses import (
    INPUT_ESTIMATE,
    PATHS,
    RESERVED,
    Answer,
    documented_charge,
    reference,
    request_body,
    sse_answers,
)

SSE = [(b"content-type", b"text/event-stream")]
HEADERS = [(b"x-account-id", b"fuzz"), (b"x-account-tier", b"single")]  # one slot
TOKEN_LIMIT = 10**9  # the tier's tokens a minute


class ClientLeft(OSError):
    pass


ENDINGS = (
    "app raises",
    "client leaves",  # the server cancels the app (hypercorn; an outer timeout)
    "send raises",  # a server whose send fails once the client is gone
    "left while held",
    "left during the body",
    "cancelled anywhere",  # after any number of event-loop turns
)


def _error_out(how: str, at: int, chunks: int) -> tuple[type[BaseException] | None, ...]:
    """What may come out of HydraGuard: the app's own error, or the cancellation."""
    return {
        "app raises": (AppFailed,),
        "client leaves": (asyncio.CancelledError,),
        "send raises": (ClientLeft,) if at <= chunks else (None,),
        "left while held": (asyncio.CancelledError,),
        "left during the body": (None,),
        "cancelled anywhere": (asyncio.CancelledError, None),
    }[how]


async def ending(
    kit: SimpleNamespace, answer: Answer, chunks: list[bytes], how: str, at: int, turns: int
) -> None:
    path = PATHS[answer.dialect]
    scope = kit.http_scope(path, headers=HEADERS)
    reply = Reply(200, SSE, chunks)
    if how == "app raises":
        reply.fail_at = at
    elif how == "client leaves":
        reply.hang_at = at
    app = Downstream(reply)
    guard = build(app, DELAYING if how == "left while held" else PLAIN)
    calls = attach_settle_counter(guard)
    body = request_body(answer.dialect)
    received: list[dict[str, Any]] = []
    leaving = how == "left during the body"
    parts = [body[: at % len(body)] if leaving else body]

    async def receive() -> dict[str, Any]:
        if parts:
            return {"type": "http.request", "body": parts.pop(), "more_body": leaving}
        if not leaving:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if how == "send raises" and len(received) == at + 1:
            raise ClientLeft
        received.append(message)

    try:
        task = asyncio.create_task(guard(scope, receive, send))
        if how == "client leaves":
            hanging = asyncio.create_task(app.hanging.wait())
            await asyncio.wait([task, hanging], return_when=asyncio.FIRST_COMPLETED)
            hanging.cancel()
            task.cancel()
        elif how == "left while held":
            while not guard.guard._held and not task.done():  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0)
            task.cancel()
        elif how == "cancelled anywhere":
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
        error: BaseException | None = None
        try:
            await task
        except (AppFailed, ClientLeft, asyncio.CancelledError) as exc:
            error = exc
        came_out = type(error) if error is not None else None
        assert came_out in _error_out(how, at, len(chunks)), (how, at, error)
        usage = await usage_of(guard, "fuzz", "single")
        assert usage["concurrency"] == 0
        if leaving:
            assert calls == [] and usage["requests"] == 0 and usage["tokens"] == 0
            return
        if how == "cancelled anywhere":
            assert len(calls) <= 1
            if calls:  # after admission: settled once
                expected = calls[0]
            else:  # before (nothing counted), or on Redis in it (the reservation stays)
                expected = int(usage["tokens"])
                assert expected in (0, INPUT_ESTIMATE + RESERVED), expected
            assert math.isclose(usage["tokens"], expected, rel_tol=2**-50)
        else:
            expected = _streamed_charge(answer, app, how, at)
            assert calls == [expected], (calls, expected, how, at)
            assert math.isclose(usage["tokens"], expected, rel_tol=2**-50)  # doubles past 2^53
        # The slot is free: the one-slot tier admits the next request (unless the usage
        # reported used up the tier's tokens).
        settled = len(calls)
        app.reply = Reply()
        follow = await kit.call_asgi(guard, scope, body)
        if expected < TOKEN_LIMIT - 10_000:
            assert follow[0]["status"] == 200, follow
            assert len(calls) == settled + 1
        else:
            assert b"tokens" in follow[1]["body"]
    finally:
        await guard.aclose()


def _streamed_charge(answer: Answer, app: Downstream, how: str, at: int) -> int:
    """README: the input plus what was streamed (every chunk handed to send was read); an
    answer never begun (the app stopped first) is an error; a request let go while held
    was never served: its reservation goes back whole."""
    if how == "left while held":
        return 0
    early = how in ("app raises", "client leaves") and at == -1
    streamed = b"".join(app.sent)
    said = reference(Answer(answer.dialect, True, streamed))
    return documented_charge(said, 500 if early else 200, len(streamed), False, INPUT_ESTIMATE)


@pytest.mark.parametrize("how", ENDINGS)
@fuzz_settings(30)
@given(data=st.data(), dialect=st.sampled_from(sorted(PATHS)))
def test_a_request_ending_early_releases_its_slot_and_settles_once(
    kit: SimpleNamespace, how: str, data: Any, dialect: str
) -> None:
    answer = data.draw(sse_answers(dialect), label="answer")
    size = len(answer.body)
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=6), label="cuts"))
    chunks = [answer.body[a:b] for a, b in itertools.pairwise([0, *cuts, size])]
    at = data.draw(st.integers(-1, len(chunks) + 1), label="at")
    turns = data.draw(st.integers(0, 120), label="turns") if how == "cancelled anywhere" else 0
    run(lambda: ending(kit, answer, chunks, how, at, turns))
