"""Property: whatever body and headers a client sends on a dialect's route, HydraGuard never
answers 500 itself and never raises; a body that is not a JSON object gets 400 (413 when
too large) in the dialect's envelope; an admitted body reaches the app byte for byte,
unless a documented rewrite applies (README: stream usage, cap_max_tokens, strip), and then
it is that rewrite of the same JSON with a content-length that matches."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_harness import (
    BATCH_MAX_BYTES,
    CAP,
    MARK,
    MAX_BYTES,
    MAX_OUTPUT,
    PLAIN,
    REWRITING,
    ROUTES,
    STRIPPED,
    Downstream,
    build,
    envelope_ok,
    fuzz_settings,
    run,
)
from fuzz_requests import bodies, headers
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
    dialect, envelope = ROUTES[path]
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
    sent = arrived[0]
    served = (MARK[0].decode(), MARK[1].decode()) in response.headers.items()
    status = response.status_code
    if not served:
        assert 400 <= status < 500, (status, response.content[:300])
        assert envelope_ok(envelope, response.json()), response.content[:300]
        assert app.received == []
    cap = BATCH_MAX_BYTES if dialect == "anthropic-batches" else MAX_BYTES
    declared = next((v for k, v in sent if k == b"content-length"), None)
    try:
        early = declared is not None and int(declared.decode("latin-1")) > cap
    except ValueError:
        early = False
    if early or len(body) > cap:
        event("413 too large")
        assert status == 413 and not served
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        if not body and method in READING:
            event("served: empty reading request")
            assert served and app.received[0][1] == b""
        else:
            event("400 not a JSON object")
            assert status == 400 and not served, (status, body[:200])
        return
    asked = asked_output(dialect, parsed, rewriting)
    if asked > TOO_LARGE:
        event("429 too large")
        assert status == 429 and not served
        return
    expected = rewritten(dialect, body, rewriting)
    if expected is not None and not writable(expected):
        # README: a body that needs a rewrite nested too deep to write back gets 400.
        event("400 unwritable")
        assert status == 400 and not served, status
        return
    if asked < TOO_LARGE - 10**6:
        assert served, (status, response.content[:300])
    if not served:
        return
    assert status == 200 and response.content == b'{"ok": true}'
    [(scope, got)] = app.received
    event(f"served: {'unchanged' if expected is None else 'rewritten'}")
    if expected is None:
        assert got == body
        assert _without(scope["headers"], {b"accept-encoding"}) == _without(
            sent, {b"accept-encoding"}
        )
        return
    assert same(orjson.loads(got), expected), (got[:300], expected)
    fixed = {b"accept-encoding", b"content-length", b"transfer-encoding"}
    assert _without(scope["headers"], fixed) == _without(sent, fixed)
    lengths = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
    assert lengths == [str(len(got)).encode()]
    assert not [k for k, _ in scope["headers"] if k.lower() == b"transfer-encoding"]


methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT"])


@fuzz_settings(500)
@given(data=st.data(), path=st.sampled_from(sorted(ROUTES)), rewriting=st.booleans())
def test_any_body_and_headers_on_a_dialect_route(data: Any, path: str, rewriting: bool) -> None:
    body = data.draw(bodies(ROUTES[path][0]), label="body")
    extra = data.draw(headers, label="headers")
    method = data.draw(methods, label="method")
    run(lambda: exchange(path, method, body, extra, rewriting))
