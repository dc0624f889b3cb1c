"""HydraGuard end to end through httpx.ASGITransport, on memory and on Redis:
pass-through, refusals in each dialect, rate-limit headers, exact counts under
concurrency, shadow mode, bad input and metrics."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
GENERIC = "/v1/embeddings"
CHAT_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "hello there"}],
    "max_tokens": 50,
}
MESSAGES_BODY = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def sf_members(value: str) -> dict[str, dict[str, str]]:
    """A structured-field list ``"name";k=v, ...`` as {name: {k: v}} (enough for our headers)."""
    out: dict[str, dict[str, str]] = {}
    for member in value.split(", "):
        name, *params = member.split(";")
        assert name.startswith('"') and name.endswith('"'), member
        out[name.strip('"')] = dict(param.split("=", 1) for param in params)
    return out


async def test_unmatched_route_passes_through_uncounted(guarded: Any, kit: SimpleNamespace) -> None:
    upstream = kit.Upstream()
    g = await guarded(kit.build_upstream(upstream), kit.base_policy(requests="1/minute"))
    for _ in range(3):
        response = await g.client.post(
            "/health", content=b"not json at all", headers={"x-account-id": "a"}
        )
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
    assert upstream.bodies == [b"not json at all"] * 3
    assert (await g.usage("a"))["tier.default.requests.1/minute"] == 0


async def test_websocket_and_lifespan_pass_through(guarded: Any, kit: SimpleNamespace) -> None:
    started: list[str] = []
    inner = kit.build_upstream(kit.Upstream())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                started.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await inner(scope, receive, send)

    g = await guarded(app, kit.base_policy(requests="1/minute"))

    lifespan_in = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    lifespan_out: list[dict[str, Any]] = []

    async def lifespan_receive() -> dict[str, Any]:
        return lifespan_in.pop(0)

    async def lifespan_send(message: dict[str, Any]) -> None:
        lifespan_out.append(message)

    await g.guard(
        {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
        lifespan_receive,
        lifespan_send,
    )
    assert [m["type"] for m in lifespan_out] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert started == ["lifespan.startup", "lifespan.shutdown"]

    ws_in = [{"type": "websocket.connect"}]
    ws_out: list[dict[str, Any]] = []

    async def ws_receive() -> dict[str, Any]:
        return ws_in.pop(0) if ws_in else {"type": "websocket.disconnect", "code": 1000}

    async def ws_send(message: dict[str, Any]) -> None:
        ws_out.append(message)

    scope = kit.http_scope("/ws") | {"type": "websocket", "scheme": "ws", "subprotocols": []}
    for _ in range(2):  # a request limit of 1 does not apply to websockets
        ws_in[:] = [{"type": "websocket.connect"}]
        ws_out.clear()
        await g.guard(scope, ws_receive, ws_send)
        assert [m["type"] for m in ws_out] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert ws_out[1]["text"] == "hello"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(CHAT, CHAT_BODY, id="openai"),
        pytest.param(MESSAGES, MESSAGES_BODY, id="anthropic"),
    ],
)
async def test_refusal_envelope_and_headers(
    guarded: Any, kit: SimpleNamespace, path: str, body: Any
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(requests="1/minute"))
    headers = {"x-account-id": "acct-1"}
    ok = await g.client.post(path, json=body, headers=headers)
    assert ok.status_code == 200
    refused = await g.client.post(path, json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    # 1 request at 5 s into a 60 s window: room again once it has decayed out of the next window.
    assert refused.headers["retry-after"] == "115"
    error = refused.json()
    if path == CHAT:
        assert set(error) == {"error"}
        assert error["error"]["type"] == "rate_limit_error"
        assert error["error"]["code"] == "rate_limit_exceeded"
    else:
        assert error["type"] == "error"
        assert error["error"]["type"] == "rate_limit_error"
    assert error["error"]["rule"] == "tier.default.requests.1/minute"
    assert "115" in error["error"]["message"]
    for response in (ok, refused):
        policy = sf_members(response.headers["ratelimit-policy"])
        assert policy["tier.default.requests.1/minute"] == {"q": "1", "w": "60"}
        assert policy["tier.default.tokens.1000000/minute"]["qu"] == '"tokens"'
        assert policy["tier.default.concurrency"] == {"q": "100", "qu": '"concurrent-requests"'}
        current = sf_members(response.headers["ratelimit"])
        assert current["tier.default.requests.1/minute"] == {"r": "0", "t": "55"}
    assert ("x-ratelimit-limit-requests" in ok.headers) == (path == CHAT)
    if path == CHAT:
        for response in (ok, refused):
            assert response.headers["x-ratelimit-limit-requests"] == "1"
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
            assert response.headers["x-ratelimit-reset-requests"] == "55s"
            assert response.headers["x-ratelimit-limit-tokens"] == "1000000"
        assert int(ok.headers["x-ratelimit-remaining-tokens"]) == 1000000 - (
            g.guard.guard.gate.tokens_needed(_facts(g, body), "default")[0] + 50
        )


async def test_an_upstreams_own_ratelimit_fields_are_replaced_not_doubled(
    guarded: Any, kit: SimpleNamespace
) -> None:
    # A real model API answers with its own x-ratelimit-* (the gateway's org-wide quota):
    # with ours added, a client read two conflicting values of one field.
    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [
            (b"content-type", b"application/json"),
            (b"X-RateLimit-Remaining-Requests", b"4999"),
            (b"x-ratelimit-limit-requests", b"5000"),
            (b"ratelimit", b'"org";r=4999;t=1'),
            (b"x-request-id", b"req-1"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(kit.openai_reply()).encode()})

    g = await guarded(upstream, kit.base_policy(requests="10/minute"))
    response = await g.client.post(CHAT, json=CHAT_BODY, headers={"x-account-id": "rl"})
    assert response.status_code == 200
    assert response.headers.get_list("x-ratelimit-remaining-requests") == ["9"]
    assert response.headers.get_list("x-ratelimit-limit-requests") == ["10"]
    assert len(response.headers.get_list("ratelimit")) == 1
    assert "org" not in response.headers["ratelimit"]
    assert response.headers["x-request-id"] == "req-1"
    # A route where we send no x-ratelimit-* drops the app's too: they are not the client's.
    response = await g.client.post(MESSAGES, json=MESSAGES_BODY, headers={"x-account-id": "rl"})
    assert "x-ratelimit-remaining-requests" not in response.headers
    assert "x-ratelimit-limit-requests" not in response.headers
    assert "org" not in response.headers["ratelimit"]
    assert response.headers["x-request-id"] == "req-1"


def _facts(g: Any, body: Any) -> Any:
    from hydraguard.inspect.dialects import DIALECTS

    return DIALECTS["openai-chat"].parse(dict(body))


async def test_generic_refusal_is_problem_json(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(requests="2/minute"))
    statuses = [
        (await g.client.post(GENERIC, headers={"x-account-id": "g"})).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    refused = await g.client.get(GENERIC, headers={"x-account-id": "g"})
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
    assert problem["type"] == "urn:hydraguard:rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) > 0
    assert "ratelimit" in refused.headers and "x-ratelimit-limit-requests" not in refused.headers


async def test_exactly_50_of_200_concurrent_requests_pass(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(requests="50/minute"))
    responses = await asyncio.gather(
        *(g.client.post(CHAT, json=CHAT_BODY, headers={"x-account-id": "hot"}) for _ in range(200))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50 and statuses.count(429) == 150
    assert (await g.usage("hot"))["tier.default.requests.50/minute"] == 50


async def test_shadow_mode_lets_all_through_and_counts_like_enforce(
    guarded: Any, kit: SimpleNamespace
) -> None:
    counted = {}
    for mode in ("enforce", "shadow"):
        g = await guarded(
            kit.build_upstream(kit.Upstream()), kit.base_policy(requests="50/minute", mode=mode)
        )
        responses = await asyncio.gather(
            *(
                g.client.post(CHAT, json=CHAT_BODY, headers={"x-account-id": mode})
                for _ in range(120)
            )
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == (50 if mode == "enforce" else 120)
        counted[mode] = await g.usage(mode)
        text = generate_latest(g.registry).decode()
        label = "deny" if mode == "enforce" else "shadow_deny"
        assert (
            f'hydraguard_decisions_total{{decision="{label}",policy="test",route="{CHAT}",'
            f'rule="tier.default.requests.50/minute"}} 70.0'
        ) in text
    assert counted["enforce"] == pytest.approx(counted["shadow"])


async def test_malformed_json_is_400_in_the_dialect_and_charges_nothing(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy())
    for path, body in ((CHAT, b'{"messages": [}'), (MESSAGES, b"[1, 2]"), (CHAT, b"\xff\xfe")):
        response = await g.client.post(path, content=body, headers={"x-account-id": "bad"})
        assert response.status_code == 400
        data = response.json()
        if path == CHAT:
            assert data["error"]["type"] == "invalid_request_error"
        else:
            assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert set((await g.usage("bad")).values()) == {0.0}


async def test_oversized_body_is_413_by_length_and_when_chunked(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    policy = kit.base_policy() + "body:\n  max_bytes: 1024\n"
    g = await guarded(kit.build_upstream(upstream), policy)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]}).encode()
    response = await g.client.post(CHAT, content=big, headers={"x-account-id": "big"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    # Chunked: no content-length, so the cap is enforced on the bytes as they arrive.
    scope = kit.http_scope(MESSAGES, headers=[(b"x-account-id", b"big")])
    sent = await kit.call_asgi(g.guard, scope, [big[:600], big[600:1200], big[1200:]])
    assert sent[0]["status"] == 413
    assert json.loads(kit.body_chunks(sent)[0])["error"]["type"] == "request_too_large"
    assert upstream.bodies == []
    assert set((await g.usage("big")).values()) == {0.0}


async def test_non_utf8_header_bytes_do_not_crash(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy())
    headers = [
        (b"x-account-id", b"acct-\xff\xfe"),
        (b"x-account-tier", b"\xc3\x28"),
        (b"authorization", b"Bearer \x80\x81"),
        (b"content-type", b"application/json"),
    ]
    sent = await kit.call_asgi(
        g.guard, kit.http_scope(CHAT, headers=headers), json.dumps(CHAT_BODY).encode()
    )
    assert sent[0]["status"] == 200
    # Decoded as latin-1: every byte maps to one character, the account is stable.
    assert (await g.usage("acct-\xff\xfe"))["tier.default.requests.1000/minute"] == 1


async def test_api_key_is_hashed_never_stored_raw(guarded: Any, kit: SimpleNamespace) -> None:
    from hydraguard.identify import hash_api_key

    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy())
    raw = "sk-live-SECRET-0123456789"
    for headers, path, body in (
        ({"authorization": f"Bearer {raw}"}, CHAT, CHAT_BODY),
        ({"x-api-key": raw}, MESSAGES, MESSAGES_BODY),
    ):
        assert (await g.client.post(path, json=body, headers=headers)).status_code == 200
    account = hash_api_key(raw)
    assert raw not in account and account.startswith("key-")
    assert (await g.usage(account))["tier.default.requests.1000/minute"] == 2
    store = g.guard.storage.primary
    keys = (
        [k.decode() for k in await store.client.keys("*")]
        if hasattr(store, "client")
        else list(store._windows) + list(store._leases)
    )
    assert keys and not any("SECRET" in key for key in keys)
    assert "SECRET" not in generate_latest(g.registry).decode()


IP_POLICY = """
name: ip
identity:
  account:
    - client_ip: true
  trusted_proxies: ["127.0.0.1", "10.0.0.0/8"]
routes:
  - path: /v1/embeddings
tiers:
  default:
    requests: 100/minute
"""


@pytest.mark.parametrize(
    ("peer", "forwarded", "account"),
    [
        pytest.param("127.0.0.1", "198.51.100.7", "ip-198.51.100.7", id="trusted-peer"),
        pytest.param("127.0.0.1", "198.51.100.7, 10.1.2.3", "ip-198.51.100.7", id="trusted-chain"),
        pytest.param(
            "127.0.0.1", "6.6.6.6, 198.51.100.7", "ip-198.51.100.7", id="spoofed-left-hop"
        ),
        pytest.param("127.0.0.1", None, "ip-127.0.0.1", id="trusted-no-header"),
        pytest.param("203.0.113.9", "198.51.100.7", "ip-203.0.113.9", id="untrusted-peer"),
    ],
)
async def test_forwarded_for_only_from_trusted_proxies(
    guarded: Any, kit: SimpleNamespace, peer: str, forwarded: str | None, account: str
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), IP_POLICY, client=(peer, 5555))
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert (await g.client.post(GENERIC, headers=headers)).status_code == 200
    assert (await g.usage(account))["tier.default.requests.100/minute"] == 1


TRUSTED_CONTEXT_POLICY = """
name: ctx
identity:
  account:
    - header: x-account-id
    - client_ip: true
  tier:
    header: x-account-tier
  trusted_proxies: ["127.0.0.1"]
  context_headers_from: trusted_proxies
routes:
  - path: /v1/embeddings
tiers:
  default:
    requests: 1/minute
  pro:
    requests: 100/minute
"""


@pytest.mark.parametrize(
    ("peer", "account", "tier"),
    [
        pytest.param("127.0.0.1", "acct-9", "pro", id="from-trusted-proxy"),
        pytest.param("203.0.113.9", "ip-203.0.113.9", "default", id="from-anyone-else"),
    ],
)
async def test_context_headers_only_from_trusted_proxies(
    guarded: Any, kit: SimpleNamespace, peer: str, account: str, tier: str
) -> None:
    g = await guarded(
        kit.build_upstream(kit.Upstream()), TRUSTED_CONTEXT_POLICY, client=(peer, 5555)
    )
    headers = {"x-account-id": "acct-9", "x-account-tier": "pro"}
    assert (await g.client.post(GENERIC, headers=headers)).status_code == 200
    usage = await g.usage(account, tier)
    rule = "tier.pro.requests.100/minute" if tier == "pro" else "tier.default.requests.1/minute"
    assert usage[rule] == 1
    second = await g.client.post(GENERIC, headers=headers)
    assert second.status_code == (200 if tier == "pro" else 429)


async def test_unknown_tier_header_gets_the_default_tier(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(requests="1/minute"))
    headers = {"x-account-id": "t", "x-account-tier": "platinum-unlimited"}
    statuses = [(await g.client.post(GENERIC, headers=headers)).status_code for _ in range(2)]
    assert statuses == [200, 429]


async def test_openai_stream_request_gets_include_usage_with_correct_length(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    g = await guarded(kit.build_upstream(upstream), kit.base_policy())
    body = {**CHAT_BODY, "stream": True, "stream_options": {"other": 1}}
    assert (await g.client.post(CHAT, json=body, headers={"x-account-id": "s"})).status_code == 200
    seen = json.loads(upstream.bodies[0])
    assert seen["stream_options"] == {"other": 1, "include_usage": True}
    assert seen["messages"] == body["messages"]
    assert upstream.headers[0]["content-length"] == str(len(upstream.bodies[0]))
    # Already asked for: the body goes through byte for byte.
    raw = json.dumps(
        {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    ).encode()
    await g.client.post(CHAT, content=raw, headers={"x-account-id": "s"})
    assert upstream.bodies[1] == raw
    # Not streaming: untouched too.
    raw = json.dumps(CHAT_BODY).encode()
    await g.client.post(CHAT, content=raw, headers={"x-account-id": "s"})
    assert upstream.bodies[2] == raw


async def test_a_body_too_deep_to_rewrite_is_refused_and_gives_its_slot_back(
    guarded: Any, kit: SimpleNamespace
) -> None:
    # Found by tests/test_fuzz_requests.py: orjson reads JSON nested 1024 deep but writes
    # only 254; the rewrite raised after admission: a 500, with the concurrency slot and
    # the token reservation kept until the lease expired.
    upstream = kit.Upstream()
    g = await guarded(kit.build_upstream(upstream), kit.base_policy(concurrency=1))
    deep = "[" * 300 + "]" * 300
    body = json.dumps(CHAT_BODY)[:-1] + ', "stream": true, "metadata": ' + deep + "}"
    refused = await g.client.post(CHAT, content=body, headers={"x-account-id": "deep"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "body_too_deep"
    assert upstream.bodies == []
    usage = await g.usage("deep")
    assert usage["tier.default.tokens.1000000/minute"] == 0
    assert usage["tier.default.concurrency"] == 0
    # Nothing to rewrite (not streamed): it goes through as sent.
    body = body.replace('"stream": true', '"stream": false')
    response = await g.client.post(CHAT, content=body, headers={"x-account-id": "deep"})
    assert response.status_code == 200 and upstream.bodies == [body.encode()]


async def test_decision_metrics_have_bounded_labels(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(requests="2/minute"))
    account = "acct-do-not-leak-77"
    for _ in range(3):
        await g.client.post(CHAT, json=CHAT_BODY, headers={"x-account-id": account})
    await g.client.post(CHAT, content=b"{", headers={"x-account-id": account})
    text = generate_latest(g.registry).decode()
    assert (
        'hydraguard_decisions_total{decision="allow",policy="test",route="/v1/chat/completions",'
        'rule="none"} 2.0'
    ) in text
    assert (
        'hydraguard_decisions_total{decision="deny",policy="test",route="/v1/chat/completions",'
        'rule="tier.default.requests.2/minute"} 1.0'
    ) in text
    assert (
        'hydraguard_decisions_total{decision="invalid",policy="test",route="/v1/chat/completions",'
        'rule="malformed_json"} 1.0'
    ) in text
    assert "hydraguard_decision_seconds_count" in text
    assert account not in text
    for line in text.splitlines():
        if line.startswith("hydraguard_") and "{" in line:
            labels = line[line.index("{") + 1 : line.index("}")]
            names = {pair.split("=")[0] for pair in labels.split(",") if pair}
            assert names <= {
                "policy",
                "route",
                "decision",
                "rule",
                "source",
                "operation",
                "result",
                "le",
            }


PER_RULE_SHADOW = """
name: rules
identity:
  account:
    - header: x-account-id
tiers:
  default:
    requests:
      - {limit: 1/minute, mode: shadow}
      - 3/minute
    max_output_tokens: 100
storage:
  timeout: 5
"""


async def test_a_shadow_rule_in_an_enforced_policy(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), PER_RULE_SHADOW)
    statuses = [
        (await g.client.post(CHAT, json=CHAT_BODY, headers={"x-account-id": "r"})).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # the shadow rule never refuses, the other does
    text = generate_latest(g.registry).decode()
    route = 'policy="rules",route="/v1/chat/completions"'
    assert f'decision="shadow_deny",{route},rule="tier.default.requests.1/minute"}} 2.0' in text
    assert f'decision="deny",{route},rule="tier.default.requests.3/minute"}} 1.0' in text


async def test_tier_output_allowance_is_reserved_without_max_tokens(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(tokens="1000/minute"))
    body = {"messages": [{"role": "user", "content": "x" * 40}]}  # 10 + 4 input, 100 output
    response = await g.client.post(CHAT, json=body, headers={"x-account-id": "alw"})
    assert response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 114)
    # After the response, the reservation is replaced by the upstream's usage (11 + 7).
    assert (await g.usage("alw"))["tier.default.tokens.1000/minute"] == 18


async def test_a_reload_to_fixed_windows_reads_the_kept_counters_as_fixed(
    guarded: Any, kit: Any
) -> None:
    """strategy follows a reloaded policy in storage too (the storage kept its start-up one)."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    clock = kit.Clock(1_800_000_000.0)  # a window boundary
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy("2/minute"), clock=clock)

    async def statuses(n: int) -> list[int]:
        return [
            (await g.client.post(CHAT, json=body, headers={"x-account-id": "w"})).status_code
            for _ in range(n)
        ]

    assert await statuses(2) == [200, 200]
    clock.now += 90  # half-way through the next window: sliding still counts one of the two
    g.guard.reload(kit.compile_yaml(kit.base_policy("2/minute", strategy="fixed-window")))
    assert await statuses(3) == [200, 200, 429]
