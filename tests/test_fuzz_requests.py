"""Property: whatever body and headers a client sends on a dialect's route, HydraGuard never
answers 500 itself and never raises; a body that is not a JSON object gets 400 (413 when
too large) in the dialect's envelope; an admitted body reaches the app byte for byte,
unless a documented rewrite applies (README: stream usage, cap_max_tokens, strip), and then
it is that rewrite of the same JSON with a content-length that matches."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_harness import (
    BATCH_MAX_BYTES,
    BRIEFLY_HELD,
    CAP,
    GENERIC,
    MARK,
    MAX_BYTES,
    MAX_OUTPUT,
    PLAIN,
    REWRITING,
    ROUTES,
    STRIPPED,
    Downstream,
    attach_settle_counter,
    build,
    envelope_ok,
    fuzz_settings,
    record_identities,
    run,
    usage_of,
)
from fuzz_requests import bodies, headers, recased
from hydraguard.inspect.facts import param_flag, param_int

READING = {"GET", "HEAD", "OPTIONS"}
LOGPROBS_ENTRY = "message.output_text.logprobs"
_CAP_KEYS = {
    "openai-chat": ("max_completion_tokens", "max_tokens"),
    "openai-responses": ("max_output_tokens",),
    "anthropic-messages": ("max_tokens",),
}
TOO_LARGE = 10**9  # the tiers' token limit: a request alone above it is refused


def _cap(dialect: str, data: dict[str, Any]) -> bool:
    keys = _CAP_KEYS[dialect]
    changed = False
    for key in [k for k in keys if k in data] or [keys[-1]]:
        asked = param_int(data.get(key))
        if asked is None or asked > CAP:
            data[key] = CAP
            changed = True
    return changed


def _strip(dialect: str, data: dict[str, Any]) -> bool:
    changed = False
    for name in STRIPPED:
        if name in data:
            del data[name]
            changed = True
    include = data.get("include")
    if dialect == "openai-responses" and isinstance(include, list) and LOGPROBS_ENTRY in include:
        data["include"] = [entry for entry in include if entry != LOGPROBS_ENTRY]
        changed = True
    return changed


def _entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    requests = data.get("requests")
    if not isinstance(requests, list):
        return []
    return [
        e["params"] for e in requests if isinstance(e, dict) and isinstance(e.get("params"), dict)
    ]


def rewritten(dialect: str, body: bytes, rewriting: bool) -> dict[str, Any] | None:
    """The body as the README says it is forwarded, or None when it goes through unchanged."""
    data = orjson.loads(body)  # a copy of its own (deepcopy recurses too deep)
    changed = False
    if dialect == "openai-chat" and param_flag(data.get("stream")):
        options = data.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            data["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                      "include_usage": True}  # fmt: skip
            changed = True
    if rewriting:
        if dialect == "anthropic-batches":
            for params in _entries(data):
                if param_int(params.get("max_tokens")) is not None:
                    changed |= _cap("anthropic-messages", params)
                changed |= _strip("anthropic-messages", params)
        else:
            changed |= _cap(dialect, data)
            changed |= _strip(dialect, data)
    return data if changed else None


def asked_output(dialect: str, data: dict[str, Any], rewriting: bool) -> int:
    """The output tokens the request reserves (README: max_tokens x n, or the tier's)."""
    if dialect == "anthropic-batches":
        asked = [param_int(p.get("max_tokens")) or 0 for p in _entries(data)]
        return sum(min(a, CAP) if rewriting else a for a in asked)
    keys = _CAP_KEYS[dialect]
    found = next((v for v in (param_int(data.get(k)) for k in keys) if v is not None), None)
    out = MAX_OUTPUT if found is None else found
    if rewriting:
        out = min(out, CAP)
    n = max(param_int(data.get("n")) or 1, 1) if dialect == "openai-chat" else 1
    return out * n


def same(a: Any, b: Any) -> bool:
    """JSON equality that tells 1 from 1.0 and from true (Python's == does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def writable(data: Any) -> bool:
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        return False
    return True


def _without(raw: list[tuple[bytes, bytes]], names: set[bytes]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in raw if k.lower() not in names]


async def exchange(
    path: str, method: str, body: bytes, extra: list[tuple[bytes, bytes]], rewriting: bool
) -> None:
    app = Downstream()
    guard = build(app, REWRITING if rewriting else PLAIN)
    arrived: list[list[tuple[bytes, bytes]]] = []

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        arrived.append(list(scope["headers"]))
        await guard(scope, receive, send)

    transport = httpx.ASGITransport(app=recorded, client=("203.0.113.5", 4000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            request = client.build_request(method, path, content=body, headers=extra)
            response = await client.send(request)  # raises if HydraGuard does
    finally:
        await guard.aclose()
    served = (MARK[0].decode(), MARK[1].decode()) in response.headers.items()
    outcome = verify(
        path, method, body, arrived[0], rewriting,
        response.status_code, served, response.content, app.received,
    )  # fmt: skip
    event(outcome)


def declared_length(sent: list[tuple[bytes, bytes]]) -> int | None:
    """The content-length HydraGuard reads: the first line's, whatever the name's case."""
    declared = next((v for k, v in sent if k.lower() == b"content-length"), None)
    try:
        return int(declared.decode("latin-1")) if declared is not None else None
    except ValueError:
        return None


def verify(
    path: str,
    method: str,
    body: bytes,
    sent: list[tuple[bytes, bytes]],
    rewriting: bool,
    status: int,
    served: bool,
    content: bytes,
    received: list[tuple[dict[str, Any], bytes]],
) -> str:
    """Check what came of ``body`` sent with the headers ``sent``: the answer, and what the
    app received (scope and body); returns the outcome."""
    dialect, envelope = ROUTES[path]
    if not served:
        assert 400 <= status < 500, (status, content[:300])
        assert envelope_ok(envelope, orjson.loads(content)), content[:300]
        assert received == []
    cap = BATCH_MAX_BYTES if dialect == "anthropic-batches" else MAX_BYTES
    if (declared_length(sent) or 0) > cap or len(body) > cap:
        assert status == 413 and not served
        return "413 too large"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        if not body and method in READING:
            assert served and received[0][1] == b""
            return "served: empty reading request"
        assert status == 400 and not served, (status, body[:200])
        return "400 not a JSON object"
    asked = asked_output(dialect, parsed, rewriting)
    if asked > TOO_LARGE:
        assert status == 429 and not served
        return "429 too large"
    expected = rewritten(dialect, body, rewriting)
    if expected is not None and not writable(expected):
        # README: a body that needs a rewrite nested too deep to write back gets 400.
        assert status == 400 and not served, status
        return "400 unwritable"
    if asked < TOO_LARGE - 10**6:
        assert served, (status, content[:300])
    if not served:
        return "429 near the token limit"
    assert status == 200 and content == b'{"ok": true}'
    [(scope, got)] = received
    if expected is None:
        assert got == body
        assert _without(scope["headers"], {b"accept-encoding"}) == _without(
            sent, {b"accept-encoding"}
        )
        return "served: unchanged"
    assert same(orjson.loads(got), expected), (got[:300], expected)
    fixed = {b"accept-encoding", b"content-length", b"transfer-encoding"}
    assert _without(scope["headers"], fixed) == _without(sent, fixed)
    lengths = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
    assert lengths == [str(len(got)).encode()]
    assert not [k for k, _ in scope["headers"] if k.lower() == b"transfer-encoding"]
    return "served: rewritten"


methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT"])


@fuzz_settings(500)
@given(data=st.data(), path=st.sampled_from(sorted(ROUTES)), rewriting=st.booleans())
def test_any_body_and_headers_on_a_dialect_route(data: Any, path: str, rewriting: bool) -> None:
    body = data.draw(bodies(ROUTES[path][0]), label="body")
    extra = data.draw(headers, label="headers")
    method = data.draw(methods, label="method")
    run(lambda: exchange(path, method, body, extra, rewriting))


# A body as a server delivers it: in http.request messages of any size (empty ones too, with
# "body" or "more_body" left out where ASGI lets them default), framed by a content-length,
# by chunked transfer or by nothing; the client may leave (http.disconnect) before the last.
FRAMINGS = ("content-length", "chunked", "none")


@st.composite
def deliveries(draw: st.DrawFn, body: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """The messages that carry ``body``, and the index of the first one the client never
    sends (an http.disconnect comes instead), or None."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8), label="cuts"))
    chunks = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]
    messages: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunks):
        message: dict[str, Any] = {"type": "http.request"}
        if chunk or draw(st.booleans()):
            message["body"] = chunk
        more = index < len(chunks) - 1
        if more or draw(st.booleans()):
            message["more_body"] = more
        messages.append(message)
    leave = draw(st.one_of(st.none(), st.none(), st.integers(0, len(messages) - 1)), label="leave")
    return messages, leave


def framed(draw: Any, body: bytes, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    framing = draw(st.sampled_from(FRAMINGS), label="framing")
    line = {
        "content-length": [(draw(recased(b"content-length")), str(len(body)).encode())],
        "chunked": [(draw(recased(b"transfer-encoding")), b"chunked")],
        "none": [],
    }[framing]
    at = draw(st.integers(0, len(extra)), label="at")
    return [*extra[:at], *line, *extra[at:]]


async def delivered(
    kit: SimpleNamespace,
    path: str,
    method: str,
    body: bytes,
    sent: list[tuple[bytes, bytes]],
    messages: list[dict[str, Any]],
    leave: int | None,
    policy: str,
) -> str:
    app = Downstream()
    guard = build(app, POLICIES[policy])
    rewriting = policy == "rewriting"
    identities = record_identities(guard)
    settled = attach_settle_counter(guard)
    pending = list(messages if leave is None else messages[:leave])

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if leave is None:
            await asyncio.Event().wait()  # the client waits for its answer
        return {"type": "http.disconnect"}

    answer: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = kit.http_scope(path, method=method, headers=sent, client=("203.0.113.5", 4000))
    try:
        async with asyncio.timeout(10):  # a body lost on the way: the app would wait for ever
            await guard(scope, receive, send)  # raises if HydraGuard does
        [identity] = identities
        usage = await usage_of(guard, identity.account, identity.tier)
    finally:
        await guard.aclose()
    assert usage["concurrency"] == 0  # whatever happened, no slot is left taken
    if path == GENERIC:  # its body goes through as sent, message by message
        return _generic(body, messages, leave, answer, app, usage, settled)
    cap = BATCH_MAX_BYTES if ROUTES[path][0] == "anthropic-batches" else MAX_BYTES
    arrived = [m.get("body", b"") for m in messages[:leave]]
    crossed = any(sum(map(len, arrived[: i + 1])) > cap for i in range(len(arrived)))
    if leave is not None and (declared_length(sent) or 0) <= cap and not crossed:
        # Gone before its body was in: nothing answered, forwarded, counted or charged.
        assert answer == [] and app.received == [] and settled == []
        assert usage == {"requests": 0, "tokens": 0, "concurrency": 0}
        return "client left during the body"
    start, *rest = answer
    served = MARK in start["headers"]
    content = b"".join(m.get("body", b"") for m in rest)
    outcome = verify(path, method, body, sent, rewriting, start["status"], served, content,
                     app.received)  # fmt: skip
    if served:
        assert len(settled) == 1 and usage["requests"] == 1
        assert usage["tokens"] == settled[0]
    elif outcome.startswith(("413", "400 not", "429")):  # refused, nothing counted or charged
        assert settled == [] and usage == {"requests": 0, "tokens": 0, "concurrency": 0}
    elif outcome == "400 unwritable":  # README: its tokens and slot go back; a request counts
        assert settled == [0] and usage == {"requests": 1, "tokens": 0, "concurrency": 0}
    return outcome


def _generic(
    body: bytes,
    messages: list[dict[str, Any]],
    leave: int | None,
    answer: list[dict[str, Any]],
    app: Downstream,
    usage: dict[str, float],
    settled: list[int],
) -> str:
    # Counted in requests as it arrives, charged no tokens, settled once however it ends.
    assert settled == [0] and usage == {"requests": 1, "tokens": 0, "concurrency": 0}
    if leave is not None:  # the app saw the client leave: it answered nothing
        assert answer == [] and app.received == []
        return "generic: client left during the body"
    assert answer[0]["status"] == 200 and MARK in answer[0]["headers"]
    [(_, got)] = app.received
    assert got == body
    return "generic: served"


POLICIES = {"plain": PLAIN, "rewriting": REWRITING, "briefly held": BRIEFLY_HELD}


@fuzz_settings(150)
@given(data=st.data(), path=st.sampled_from([*sorted(ROUTES), GENERIC]),
       policy=st.sampled_from(sorted(POLICIES)))  # fmt: skip
def test_a_body_in_many_messages_arrives_whole_or_not_at_all(
    kit: SimpleNamespace, data: Any, path: str, policy: str
) -> None:
    dialect = ROUTES[path][0] if path in ROUTES else "openai-chat"
    body = data.draw(bodies(dialect), label="body")
    sent = framed(data.draw, body, data.draw(headers, label="headers"))
    method = data.draw(methods, label="method")
    messages, leave = data.draw(deliveries(body), label="delivery")
    outcome = run(lambda: delivered(kit, path, method, body, sent, messages, leave, policy))
    event(outcome)
