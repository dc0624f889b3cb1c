"""The live middleware and ``hydraguard replay`` on the same traffic, request by request.

``run_live`` sends traffic records, in order and one at a time, through a live HydraGuard
(direct ASGI calls, the clock at each record's timestamp) in front of ``Downstream``, with
the policy's audit log on; ``run_replay`` replays that audit log through ``replay_file``,
the loop of ``hydraguard replay``. Both sides note, per request, what the decision code
decided (the Decision ``Guard.decide`` returned), what ``Guard.complete`` settled as served
and what ``Gate.settle`` charged, so that a test can compare them field by field.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from hydraguard import guard as guard_module
from hydraguard.admit.gate import Decision
from hydraguard.cli import main
from hydraguard.guard import Guard
from hydraguard.middleware import HydraGuard
from hydraguard.policy.compiled import CompiledPolicy
from hydraguard.replay.engine import Engine
from hydraguard.replay.run import replay_file

# A record may carry ``"fault"`` (the test's, never logged): the downstream then raises
# before answering ("raise") or after the first streamed event ("cut").
FAULTS = ("raise", "cut")


@dataclass(slots=True)
class Step:
    """What one request came to, on either side."""

    account: str
    ts: float
    admitted: bool
    rule: str | None
    actions: tuple[str, ...]
    shadow_actions: tuple[str, ...]
    output_cap: int | None
    strip: tuple[str, ...]
    delay: float
    risk: float
    cluster: str | None
    charged: int | None = None  # tokens Gate.settle charged in all; None: nothing reserved
    served: int | None = None  # output tokens Guard.complete settled; None: not completed
    # live only
    status: int = 0  # the HTTP status the client got
    forwarded: Any = None  # the body the downstream got, when a cap or strip applied


class Spy:
    """Wraps a Guard's ``decide`` and ``complete`` and its gate's ``settle``: the decision
    code itself runs unchanged, and each decision becomes a ``Step`` at once (keeping the
    decisions would grow the heap, and with it the garbage collector's pauses)."""

    def __init__(self, guard: Guard) -> None:
        self.steps: list[Step] = []
        self._open: tuple[Decision, Step] | None = None  # requests run one at a time
        decide, complete, settle = guard.decide, guard.complete, guard.gate.settle

        async def spied_decide(identity: Any, facts: Any, now: float) -> Decision:
            decision = await decide(identity, facts, now)
            step = Step(
                decision.identity.account,
                decision.ts,
                decision.admitted,
                decision.rule,
                tuple(decision.actions),
                tuple(decision.shadow_actions),
                decision.output_cap,
                tuple(decision.strip),
                decision.delay,
                decision.risk,
                decision.cluster,
            )
            self.steps.append(step)
            self._open = (decision, step)
            return decision

        def spied_complete(
            decision: Decision, facts: Any, used_input: int, used_output: int, *rest: Any, **kw: Any
        ) -> None:
            self._current(decision).served = used_output
            complete(decision, facts, used_input, used_output, *rest, **kw)

        def spied_settle(decision: Decision, used: int, now: float) -> None:
            settle(decision, used, now)
            if decision.store is not None:
                step = self._current(decision)
                step.charged = (step.charged or 0) + used

        guard.decide = spied_decide  # type: ignore[method-assign]
        guard.complete = spied_complete  # type: ignore[method-assign]
        guard.gate.settle = spied_settle  # type: ignore[method-assign]

    def _current(self, decision: Decision) -> Step:
        assert self._open is not None and self._open[0] is decision, "one request at a time"
        return self._open[1]


# --- the downstream model API ------------------------------------------------------------


class Downstream:
    """A model API that answers each request as its traffic record says: the record's
    status and usage, as JSON or as an SSE stream when the request asks to stream (the
    usage chunk of an OpenAI stream only when asked for, as OpenAI does). Like a model it
    stops at the output limit it is sent (x ``n``), so a capped request is served less than
    the record's output."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self.forwarded: Any = None
        self.served: int | None = None  # output tokens answered, with their usage
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = self.forwarded = orjson.loads(raw) if raw else None
        record, path = self.record, scope["path"]
        fault = record.get("fault")
        if fault == "raise":
            raise RuntimeError("the upstream failed before answering")
        status = record.get("status") or 200
        usage = record.get("usage") or {}
        input_tokens = int(usage.get("input_tokens") or 0)
        output = int(usage.get("output_tokens") or 0)
        if isinstance(body, dict):
            n = body.get("n") if isinstance(body.get("n"), int) else 1
            for key in ("max_tokens", "max_completion_tokens"):
                limit = body.get(key)
                if isinstance(limit, int) and not isinstance(limit, bool):
                    output = min(output, limit * max(1, n))
        if status >= 400:
            await _answer(send, status, {"error": {"type": "upstream", "message": "failed"}})
            return
        if path == "/v1/messages/batches":  # billed later, with the batch's results
            await _answer(send, status, {"id": "msgbatch_1", "type": "message_batch"})
            return
        if path not in ("/v1/chat/completions", "/v1/messages"):
            await _answer(send, status, {"ok": True})
            return
        stream = isinstance(body, dict) and body.get("stream") is True
        if not stream and fault != "cut":
            reply = _openai if path == "/v1/chat/completions" else _anthropic
            self.served = output
            await _answer(send, status, reply(input_tokens, output))
            return
        if path == "/v1/chat/completions":
            options = body.get("stream_options") if isinstance(body, dict) else None
            events = [_sse(_openai_chunk({"content": "hi"})), _sse(_openai_chunk({}, "stop"))]
            if isinstance(options, dict) and options.get("include_usage") is True:
                usage_chunk = {"choices": [], "usage": _openai_usage(input_tokens, output)}
                events.append(_sse(usage_chunk))
            events.append(_sse(b"[DONE]"))
        else:
            start = {"usage": {"input_tokens": input_tokens, "output_tokens": 1}}
            delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}
            events = [
                _sse({"type": "message_start", "message": start}, "message_start"),
                _sse(delta, "content_block_delta"),
                _sse(
                    {"type": "message_delta", "usage": {"output_tokens": output}}, "message_delta"
                ),
                _sse({"type": "message_stop"}, "message_stop"),
            ]
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, event in enumerate(events):
            if fault == "cut" and index == 1:
                raise RuntimeError("the upstream failed mid-stream")
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.served = output


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


async def _answer(send: Send, status: int, payload: Any) -> None:
    data = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _openai_usage(input_tokens: int, output: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output}


def _openai(input_tokens: int, output: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": _openai_usage(input_tokens, output),
    }


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _anthropic(input_tokens: int, output: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": input_tokens, "output_tokens": output},
    }


# --- the live run ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scope(record: dict[str, Any], body: bytes) -> dict[str, Any]:
    path = record["path"]
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in record["headers"].items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": record.get("method") or "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": (record.get("ip") or "192.0.2.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }


async def _call(app: HydraGuard, scope: dict[str, Any], body: bytes) -> list[Message]:
    sent: list[Message] = []
    pending = [body]

    async def receive() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        await asyncio.Event().wait()  # the client stays: the response ends first
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except RuntimeError:  # a fault of the downstream: the server answers 500, if it can
        if not sent:
            sent.append({"type": "http.response.start", "status": 500, "headers": []})
    return sent


async def run_live(
    records: Iterable[dict[str, Any]], policy: CompiledPolicy, storage: str = "memory://"
) -> list[Step]:
    """Every record through the live middleware, one at a time, the clock at its ``ts``."""
    clock, downstream = Clock(), Downstream()
    app = HydraGuard(
        downstream, policy=policy, storage=storage, registry=CollectorRegistry(), clock=clock
    )
    audit = app.audit
    assert audit is not None, "the policy writes an audit log"
    spy = Spy(app.guard)
    learning = app.guard.learning
    held: list[float] = []
    real_sleep = asyncio.sleep
    real_hold = guard_module.hold_listening

    async def hold(delay: float, receive: Receive) -> Receive:
        # The delay action's hold (Guard._hold), noted and over at once: the clock stays at
        # arrival, as in a replay, which has no latencies (replay/engine.py).
        if delay > 0:
            held.append(delay)
        return receive

    guard_module.hold_listening = hold  # type: ignore[assignment]
    try:
        for record in records:
            clock.now = record["ts"]
            downstream.record, downstream.forwarded, downstream.served = record, None, None
            downstream.called = False
            held.clear()
            # json, not orjson: orjson writes 254 levels of nesting at most.
            body = json.dumps(record["body"]).encode() if record.get("body") is not None else b""
            count = len(spy.steps)
            sent = await _call(app, _scope(record, body), body)
            assert len(spy.steps) == count + 1, "every record is routed and decided once"
            step = spy.steps[-1]
            step.status = next(m for m in sent if m["type"] == "http.response.start")["status"]
            # Held before it was forwarded (not when refused, or too deep to rewrite: 400).
            assert held == ([step.delay] if step.delay and downstream.called else [])
            if step.status == 429:  # the rule the client was told (problem details: generic)
                refusal = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
                told = refusal["error"]["rule"] if "error" in refusal else refusal["rule"]
                assert told == step.rule
            elif downstream.served is not None:
                assert step.served == downstream.served  # settled as the downstream said
            if step.output_cap is not None or step.strip:
                step.forwarded = downstream.forwarded
            # Between requests a server goes back to its event loop: the learning deferred
            # after the response (Learning.learn, call_soon) runs there, before the next one.
            await real_sleep(0)
            assert not learning._queue and not learning._scheduled
    finally:
        guard_module.hold_listening = real_hold  # type: ignore[assignment]
        await app.aclose()  # the audit log is written out and closed
    assert (audit.dropped, audit.errors) == (0, 0), "every request has its line"
    return spy.steps


# --- the replay --------------------------------------------------------------------------


def audit_files(path: Path) -> list[Path]:
    """The audit log and its rotated files, oldest first (path.N ... path.1, path)."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    return [*sorted(rotated, key=lambda p: -int(p.suffix[1:])), path]


async def run_replay(traffic: Path, policy: CompiledPolicy) -> tuple[list[Step], bytes]:
    """``traffic`` replayed through ``policy`` by ``replay_file``: the Steps and the decision
    lines, each of which says what its Step says."""
    engine = Engine(policy)
    spy = Spy(engine.guard)
    out = io.BytesIO()
    await replay_file(traffic, policy, decisions=out, engine=engine)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == len(spy.steps)
    for number, (line, step) in enumerate(zip(lines, spy.steps, strict=True)):
        assert line == {
            "line": number,
            "account": step.account,
            "cluster": step.cluster,
            "admitted": step.admitted,
            "output_tokens": step.served or 0,
            "actions": list(step.actions),
            "rule": step.rule,
            "risk": round(step.risk, 4),
        }
    return spy.steps, out.getvalue()


async def replay_command(traffic: Path | list[Path], policy_file: Path, decisions: Path) -> bytes:
    """The decision lines ``hydraguard replay`` writes (it runs its own event loop)."""
    logs = [str(p) for p in traffic] if isinstance(traffic, list) else [str(traffic)]
    args = ["replay", *logs, "--policy", str(policy_file), "--decisions", str(decisions)]
    assert await asyncio.to_thread(main, args) == 0
    return await asyncio.to_thread(decisions.read_bytes)
