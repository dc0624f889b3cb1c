"""Property: requests held by a ``delay`` action (README: held without blocking the loop, at
most ``anomaly.max_delayed`` at once, more are refused) end as the rules say, and give back
what they reserved exactly once. Several requests arrive one after another, each held while
fewer than the bound are, and each one's client either waits, leaves while it is held (the
server says http.disconnect, as uvicorn does) or is cancelled while it is held (as hypercorn
does). A request past the bound gets the dialect's 429 (reason "throttled", the rule, a
Retry-After); one whose client left is neither forwarded nor answered; both give back their
tokens and concurrency slot (settled once, at zero) and count one request. A waiting client
is served after the hold, with any cap applied, and charged what the answer reports. A hold
in shadow holds nothing; a throttle that refuses refuses before any hold and charges nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_harness import (
    CAP,
    HOLD_BOUNDS,
    HOLDING,
    MARK,
    AuditLines,
    Downstream,
    Reply,
    build,
    envelope_ok,
    fuzz_settings,
    run,
    usage_of,
)
from fuzz_responses import PATHS, RESERVED, request_body

ENDINGS = ("waits", "leaves", "cancelled")
VARIANTS = ("delay", "delay", "delay+cap", "shadow delay", "delay+throttle")
# A JSON answer reporting its usage, in each dialect's words: 7 in, 11 out.
USAGE = {
    "openai-chat": {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 11}},
    "openai-responses": {"output": [], "usage": {"input_tokens": 7, "output_tokens": 11}},
    "anthropic-messages": {"content": [], "usage": {"input_tokens": 7, "output_tokens": 11}},
}
CHARGED = 18
JSON = (b"content-type", b"application/json")
OUTPUT_KEYS = {"openai-responses": "max_output_tokens"}  # else max_tokens


class Held:
    """Watches the guard's holds: who entered, how many were held then, who is held now."""

    def __init__(self, guard: Any) -> None:
        self.inner = guard.guard
        self.before: dict[str, int] = {}  # account -> requests held when it arrived
        self.now: set[str] = set()
        hold = self.inner._hold

        async def observed(decision: Any, *args: Any) -> Any:
            account = decision.identity.account
            self.before[account] = self.inner._held
            self.now.add(account)
            try:
                return await hold(decision, *args)
            finally:
                self.now.discard(account)

        self.inner._hold = observed


async def scenario(
    kit: SimpleNamespace, dialect: str, variant: str, bound: int, endings: list[str]
) -> None:
    path = PATHS[dialect]
    envelope = "anthropic" if dialect.startswith("anthropic") else "openai"
    app = Downstream(Reply(200, [JSON], [orjson.dumps(USAGE[dialect])]))
    guard = build(app, HOLDING[variant, bound])
    held = Held(guard)
    audit = AuditLines()
    guard.guard.audit = audit  # type: ignore[assignment]
    settled: dict[str, list[int]] = {}
    settle = guard.guard.gate.settle

    def counted(decision: Any, used: int, now: float) -> None:
        settled.setdefault(decision.identity.account, []).append(used)
        settle(decision, used, now)

    guard.guard.gate.settle = counted  # type: ignore[method-assign]
    body = request_body(dialect)
    answers: dict[str, list[dict[str, Any]]] = {}
    left_in_hold: dict[str, bool] = {}
    cancelled_in_hold: dict[str, bool] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    gone: dict[str, asyncio.Event] = {}

    def client(account: str, ending: str) -> tuple[Any, Any]:
        parts = [body]

        async def receive() -> dict[str, Any]:
            if parts:
                return {"type": "http.request", "body": parts.pop(), "more_body": False}
            if ending == "leaves":  # gone the moment it is seen held
                await gone.setdefault(account, asyncio.Event()).wait()
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # waits for its answer
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            answers[account].append(message)

        return receive, send

    try:
        for index, ending in enumerate(endings):
            account = f"held-{index}"
            answers[account] = []
            receive, send = client(account, ending)
            scope = kit.http_scope(path, headers=[(b"x-account-id", account.encode()), JSON])
            task = tasks[account] = asyncio.create_task(guard(scope, receive, send))
            # One at a time: each is held (or refused, or served) before the next arrives.
            while not task.done() and account not in held.now:  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0)
            if ending == "cancelled" and not task.done():
                cancelled_in_hold[account] = account in held.now
                task.cancel()
            elif ending == "leaves" and not task.done():
                left_in_hold[account] = account in held.now
                gone.setdefault(account, asyncio.Event()).set()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        usage = {account: await usage_of(guard, account) for account in tasks}
    finally:
        await guard.aclose()
    assert guard.guard._held == 0
    lines = {}
    for line in audit.lines:
        record = orjson.loads(line)
        assert record["account"] not in lines  # one line a request at most
        lines[record["account"]] = record["status"]
    forwarded = {
        dict(scope["headers"])[b"x-account-id"].decode(): orjson.loads(got)
        for scope, got in app.received
    }
    for (account, result), ending in zip(zip(tasks, results, strict=True), endings, strict=True):
        outcome = _check(
            account, result, ending, variant, bound, envelope, held, answers[account],
            settled.get(account, []), usage[account], forwarded.get(account), lines.get(account),
            left_in_hold.get(account), cancelled_in_hold.get(account),
        )  # fmt: skip
        event(outcome)
    if variant.startswith("delay+cap"):
        output = OUTPUT_KEYS.get(dialect, "max_tokens")
        assert all(sent[output] == CAP for sent in forwarded.values())
    elif forwarded:
        assert all(
            sent[OUTPUT_KEYS.get(dialect, "max_tokens")] == RESERVED for sent in forwarded.values()
        )


def _check(
    account: str,
    result: Any,
    ending: str,
    variant: str,
    bound: int,
    envelope: str,
    held: Held,
    answer: list[dict[str, Any]],
    settled: list[int],
    usage: dict[str, float],
    forwarded: Any,
    line: int | None,
    left_in_hold: bool | None,
    cancelled_in_hold: bool | None,
) -> str:
    """What became of one request; returns its outcome."""
    assert usage["concurrency"] == 0  # however it ended, its slot is free
    if result is not None:
        assert isinstance(result, asyncio.CancelledError) and ending == "cancelled", result
    if variant == "delay+throttle":  # refused on admission: never held, nothing charged
        assert account not in held.before and _refused(answer, envelope) is not None
        assert settled == [] and usage == {"requests": 0, "tokens": 0, "concurrency": 0}
        assert forwarded is None and line == 429
        return "refused by the throttle"
    if variant == "shadow delay":
        assert account not in held.before
    elif held.before[account] >= bound:  # the bound is full: refused at once
        error = _refused(answer, envelope)
        assert error is not None and (error["reason"], error["rule"]) == ("throttled", "hold")
        start = answer[0]
        assert any(k == b"retry-after" and int(v) >= 1 for k, v in start["headers"])
        assert settled == [0] and usage == {"requests": 1, "tokens": 0, "concurrency": 0}
        assert forwarded is None and line == 429
        return "refused: as many held as the bound"
    elif ending == "cancelled" and cancelled_in_hold:
        assert answer == [] and forwarded is None and line is None
        assert settled == [0] and usage == {"requests": 1, "tokens": 0, "concurrency": 0}
        return "cancelled while held"
    elif ending == "leaves" and left_in_hold:
        # Neither forwarded (the model would run for nobody) nor answered; nothing kept.
        assert result is None and answer == [] and forwarded is None and line is None
        assert settled == [0] and usage == {"requests": 1, "tokens": 0, "concurrency": 0}
        return "left while held"
    if ending == "cancelled" and cancelled_in_hold is not None:
        return "cancelled after its hold (a slow host)"  # settled as any cancelled request
    assert result is None and answer[0]["status"] == 200 and MARK in answer[0]["headers"]
    assert forwarded is not None and line == 200
    assert settled == [CHARGED] and usage == {"requests": 1, "tokens": CHARGED, "concurrency": 0}
    return "served after its hold" if variant != "shadow delay" else "served, hold in shadow"


def _refused(answer: list[dict[str, Any]], envelope: str) -> Any:
    """The error of a 429 in the dialect's envelope, or None."""
    start, *rest = answer
    data = orjson.loads(b"".join(m.get("body", b"") for m in rest))
    if start["status"] != 429 or MARK in start["headers"] or not envelope_ok(envelope, data):
        return None
    return data["error"]


@fuzz_settings(25)
@given(
    dialect=st.sampled_from(sorted(PATHS)),
    variant=st.sampled_from(VARIANTS),
    bound=st.sampled_from(HOLD_BOUNDS),
    endings=st.lists(st.sampled_from(ENDINGS), min_size=1, max_size=5),
)
def test_held_requests_end_as_the_rules_say_and_give_back_once(
    kit: SimpleNamespace, dialect: str, variant: str, bound: int, endings: list[str]
) -> None:
    run(lambda: scenario(kit, dialect, variant, bound, endings))
