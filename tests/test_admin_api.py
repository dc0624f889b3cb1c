"""The admin API under /_hydraguard/: auth on every endpoint, then what each one does,
through the middleware, on memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from hydraguard.middleware import HydraGuard

TOKEN = "s3cret-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
ENDPOINTS = [
    ("GET", "/_hydraguard/policy", None),
    ("POST", "/_hydraguard/reload", None),
    ("GET", "/_hydraguard/accounts/acct-1", None),
    ("POST", "/_hydraguard/accounts/acct-1/reset", None),
    ("POST", "/_hydraguard/accounts/acct-1/block", {"seconds": 60}),
    ("POST", "/_hydraguard/accounts/acct-1/unblock", None),
    ("GET", "/_hydraguard/clusters/c-0123456789abcdef", None),
    ("POST", "/_hydraguard/links", {"a": "acct-1", "b": "acct-2"}),
    ("POST", "/_hydraguard/unlink", {"a": "acct-1", "b": "acct-2"}),
    ("GET", "/_hydraguard/no-such-endpoint", None),
]
BAD_CREDENTIALS = [
    pytest.param({}, id="missing"),
    pytest.param({"authorization": "Bearer wrong"}, id="wrong"),
    pytest.param({"authorization": f"Bearer {TOKEN}x"}, id="longer"),
    pytest.param({"authorization": f"Bearer {TOKEN[:-1]}"}, id="shorter"),
    pytest.param({"authorization": f"Basic {TOKEN}"}, id="basic-scheme"),
    pytest.param({"authorization": TOKEN}, id="no-scheme"),
    pytest.param({"x-api-key": TOKEN}, id="other-header"),
]

POLICY = """\
name: {name}
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
tiers:
  default:
    requests: "{requests}"
    tokens: "100000/minute"
    concurrency: 10
    max_output_tokens: 100
storage:
  timeout: 5
{admin}"""


def policy_text(name: str = "v1", requests: str = "10/minute", token: str | None = TOKEN) -> str:
    admin = f"admin:\n  token: {token}\n" if token else ""
    return POLICY.format(name=name, requests=requests, admin=admin)


Build = Callable[..., Awaitable[SimpleNamespace]]


@pytest.fixture
async def admin_app(
    storage_uri: str, tmp_path: Path, kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Build]:
    """``await admin_app(text)``: a HydraGuard loaded from a policy FILE (so reload works)."""
    monkeypatch.delenv("HYDRAGUARD_ADMIN_TOKEN", raising=False)
    opened: list[SimpleNamespace] = []

    async def build(text: str) -> SimpleNamespace:
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        registry = CollectorRegistry()
        guard = HydraGuard(
            kit.build_upstream(kit.Upstream()),
            policy=path,
            storage=storage_uri,
            registry=registry,
            clock=kit.Clock(),
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=guard), base_url="http://testserver"
        )
        made = SimpleNamespace(guard=guard, client=client, registry=registry, path=path)
        opened.append(made)
        return made

    yield build
    for made in opened:
        await made.client.aclose()
        await made.guard.aclose()


async def chat(app: SimpleNamespace, account: str = "acct-1") -> httpx.Response:
    response = await app.client.post(
        "/v1/chat/completions",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-account-id": account},
    )
    await app.guard.drain()
    return response


async def call(
    app: SimpleNamespace, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return await app.client.request(method, path, json=body, headers=headers)


async def test_without_a_token_the_admin_api_is_not_there(admin_app: Build) -> None:
    app = await admin_app(policy_text(token=None))
    for method, path, body in ENDPOINTS:
        for headers in ({}, ADMIN):
            response = await call(app, method, path, body, headers)
            assert response.status_code == 404, (method, path)
    assert (await chat(app)).status_code == 200  # the block above did nothing


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_a_wrong_or_missing_token_gets_nothing(
    admin_app: Build, headers: dict[str, str]
) -> None:
    app = await admin_app(policy_text())
    app.path.write_text(policy_text(name="changed", requests="1/minute"))
    for method, path, body in ENDPOINTS:
        response = await call(app, method, path, body, headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {"error": "admin token required"}
    # Nothing happened: no block, no reload.
    assert app.guard.policy.name == "v1"
    assert [(await chat(app)).status_code for _ in range(2)] == [200, 200]


async def test_the_token_can_come_from_the_environment(
    admin_app: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRAGUARD_ADMIN_TOKEN", "from-env")
    app = await admin_app(policy_text(token=None))
    assert (await app.client.get("/_hydraguard/policy")).status_code == 401
    ok = await app.client.get("/_hydraguard/policy", headers={"authorization": "Bearer from-env"})
    assert ok.status_code == 200
    assert ok.json()["name"] == "v1"


async def test_account_view_and_reset(admin_app: Build) -> None:
    app = await admin_app(policy_text())
    for _ in range(10):
        assert (await chat(app)).status_code == 200
    assert (await chat(app)).status_code == 429
    view = await app.client.get("/_hydraguard/accounts/acct-1", headers=ADMIN)
    assert view.status_code == 200
    data = view.json()
    assert (data["account"], data["tier"], data["cluster"], data["blocked_seconds"]) == (
        "acct-1",
        "default",
        None,
        None,
    )
    limits = {limit["rule"]: limit for limit in data["limits"]}
    assert limits["tier.default.requests.10/minute"]["usage"] == 10  # a refusal charges nothing
    assert limits["tier.default.requests.10/minute"]["remaining"] == 0
    assert (
        limits["tier.default.tokens.100000/minute"]["usage"] == 10 * 18
    )  # usage reported by the upstream
    assert limits["tier.default.concurrency"]["usage"] == 0
    unknown_tier = await app.client.get("/_hydraguard/accounts/acct-1?tier=gold", headers=ADMIN)
    assert unknown_tier.status_code == 400

    reset = await app.client.post("/_hydraguard/accounts/acct-1/reset", headers=ADMIN)
    assert reset.status_code == 200
    assert reset.json()["removed_keys"] > 0
    after = (await app.client.get("/_hydraguard/accounts/acct-1", headers=ADMIN)).json()
    assert all(limit["usage"] == 0 for limit in after["limits"])
    assert [(await chat(app)).status_code for _ in range(11)] == [200] * 10 + [429]


async def test_block_then_unblock(admin_app: Build) -> None:
    app = await admin_app(policy_text())
    blocked = await app.client.post(
        "/_hydraguard/accounts/acct-1/block", json={"seconds": 120}, headers=ADMIN
    )
    assert blocked.status_code == 200
    assert blocked.json() == {"account": "acct-1", "blocked_seconds": 120.0}
    refused = await chat(app)
    assert refused.status_code == 429
    assert refused.json()["error"]["reason"] == "blocked"
    assert refused.json()["error"]["rule"] == "account.block"
    assert (await chat(app, "acct-2")).status_code == 200  # only that account
    view = (await app.client.get("/_hydraguard/accounts/acct-1", headers=ADMIN)).json()
    assert 0 < view["blocked_seconds"] <= 120
    unblocked = await app.client.post("/_hydraguard/accounts/acct-1/unblock", headers=ADMIN)
    assert unblocked.json() == {
        "account": "acct-1",
        "was_blocked": True,
        "risk_cleared": False,
        "cluster_blocked": None,
    }
    assert (await chat(app)).status_code == 200
    again = await app.client.post("/_hydraguard/accounts/acct-1/unblock", headers=ADMIN)
    assert again.json()["was_blocked"] is False
    # A block that ran out was no block: lifting it says so (a spent flag read as one).
    await app.client.post("/_hydraguard/accounts/acct-1/block", json={"seconds": 60}, headers=ADMIN)
    app.guard.clock.now += 61
    spent = await app.client.post("/_hydraguard/accounts/acct-1/unblock", headers=ADMIN)
    assert spent.json()["was_blocked"] is False
    bad_bodies = (
        {"seconds": 0}, {"seconds": -5}, {"seconds": 10**9}, {"seconds": "soon"}, [1],
        {"seconds": None}, {"seconds": [60]}, {"seconds": {}},
    )  # fmt: skip
    for bad in bad_bodies:
        response = await app.client.post(
            "/_hydraguard/accounts/acct-1/block", json=bad, headers=ADMIN
        )
        assert response.status_code == 400, bad
    assert (await chat(app)).status_code == 200


async def test_reload_swaps_a_valid_policy_and_keeps_the_old_on_error(admin_app: Build) -> None:
    app = await admin_app(policy_text())
    for _ in range(3):
        assert (await chat(app)).status_code == 200
    app.path.write_text(policy_text(name="v2", requests="4/minute"))
    ok = await app.client.post("/_hydraguard/reload", headers=ADMIN)
    assert ok.status_code == 200
    assert ok.json() == {"result": "ok", "policy": "v2"}
    # The counters carry over: 3 spent of the new 4.
    assert [(await chat(app)).status_code for _ in range(2)] == [200, 429]

    broken = policy_text(name="v3", requests="100/minute").replace(
        '    tokens: "100000/minute"', '    tokens: "100000/minute"\n    reqests: "5/minute"'
    )
    app.path.write_text(broken)
    line = broken.splitlines().index('    reqests: "5/minute"') + 1
    failed = await app.client.post("/_hydraguard/reload", headers=ADMIN)
    assert failed.status_code == 400
    body = failed.json()
    assert body["result"] == "error"
    assert body["errors"] == [f"{app.path}:{line}: tiers.default.reqests: unknown key"]
    # v2 keeps running: its name, and its 4/minute still refuses.
    assert (await app.client.get("/_hydraguard/policy", headers=ADMIN)).json()["name"] == "v2"
    assert (await chat(app)).status_code == 429
    assert (
        app.registry.get_sample_value("hydraguard_policy_reloads_total", {"result": "error"}) == 1
    )
    assert app.registry.get_sample_value("hydraguard_policy_reloads_total", {"result": "ok"}) == 1


async def test_cluster_endpoints_without_clustering_say_so(admin_app: Build) -> None:
    app = await admin_app(policy_text())
    for method, path, body in ENDPOINTS[6:9]:
        response = await call(app, method, path, body, ADMIN)
        assert response.status_code == 404
        assert "clustering is off" in response.json()["error"]
    bad = await app.client.post("/_hydraguard/links", json={"a": "x"}, headers=ADMIN)
    assert bad.status_code == 400


LINKING_AND_RISK = """\
clustering:
  signals:
    payment: {header: x-payment-fingerprint, weight: 1.0}
anomaly:
  risk: {rescore_every: 1}
  detectors:
    extraction_params: {weight: 1.0, min_events: 2, low: 0.1, high: 0.5}
  rules:
    - {name: watch, when: {risk_gte: 0.5}, action: flag}
"""


async def test_reload_keeps_clusters_and_risk_when_their_config_is_unchanged(
    admin_app: Build,
) -> None:
    app = await admin_app(policy_text() + LINKING_AND_RISK)
    probe = {
        "model": "m",
        "max_tokens": 1,
        "logit_bias": {"1": 5},
        "messages": [{"role": "user", "content": "next token?"}],
    }
    for account in ("keep-a", "keep-b"):
        for _ in range(2):
            response = await app.client.post(
                "/v1/chat/completions",
                json=probe,
                headers={"x-account-id": account, "x-payment-fingerprint": "card-keep"},
            )
            assert response.status_code == 200
    await app.guard.drain()

    async def state() -> tuple[str, float]:
        view = (await app.client.get("/_hydraguard/accounts/keep-b", headers=ADMIN)).json()
        return view["cluster"], view["risk"]

    before = await state()
    assert before[1] > 0.5
    app.path.write_text(policy_text(name="v2", requests="20/minute") + LINKING_AND_RISK)
    assert (await app.client.post("/_hydraguard/reload", headers=ADMIN)).status_code == 200
    assert app.guard.policy.name == "v2"
    assert await state() == before
    view = (await app.client.get("/_hydraguard/accounts/keep-a", headers=ADMIN)).json()
    assert view["cluster"] == before[0]


async def test_account_view_shows_its_linked_clusters_usage_and_grown_limits(
    admin_app: Build,
) -> None:
    # Before: the account view planned without the cluster, so its cluster rows read a
    # cluster of one that no decision charges and showed 0 at the base limit.
    app = await admin_app(
        policy_text()
        + """\
clustering:
  signals:
    payment: {header: x-payment-fingerprint, weight: 1.0}
clusters:
  requests: "100/minute"
  growth: {per_member: 0.5, max_factor: 8}
"""
    )
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for account in ("pay-a", "pay-b", "pay-a"):
        response = await app.client.post(
            "/v1/chat/completions",
            json=body,
            headers={"x-account-id": account, "x-payment-fingerprint": "card-shared"},
        )
        assert response.status_code == 200
    await app.guard.drain()
    account = (await app.client.get("/_hydraguard/accounts/pay-b", headers=ADMIN)).json()
    cluster = (
        await app.client.get(f"/_hydraguard/clusters/{account['cluster']}", headers=ADMIN)
    ).json()
    assert cluster["size"] == 2
    shown = {row["rule"]: row for row in account["limits"]}["cluster.requests.100/minute"]
    assert (shown["limit"], shown["usage"]) == (150, 3)  # 100 x (1 + 0.5 x 1); both accounts
    assert cluster["limits"][0] | {"usage": round(cluster["limits"][0]["usage"])} == {
        "rule": "cluster.requests.100/minute",
        "limit": 150,
        "window_seconds": 60,
        "usage": 3,
    }
