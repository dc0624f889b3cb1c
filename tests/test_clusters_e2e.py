"""Account linking and cluster quotas end to end, through the middleware, on memory and Redis.

Each test drives requests through ``HydraGuard`` with a hand-moved clock and drains the
background linking (Redis links known accounts after their decision) between requests,
so every outcome is deterministic.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hydraguard.middleware import HydraGuard
from shared_redis import REDIS_URL

TOKEN = "s3cret"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
CARD = "x-payment-fingerprint"


def policy(
    *,
    account: str = "100/minute",
    cluster: str = "20/minute",
    cluster_concurrency: int | None = None,
    growth: dict[str, float] | None = None,
    signals: dict[str, Any] | None = None,
) -> str:
    clusters: dict[str, Any] = {"requests": cluster}
    if cluster_concurrency is not None:
        clusters["concurrency"] = cluster_concurrency
    if growth is not None:
        clusters["growth"] = growth
    doc = {
        "name": "clusters",
        "identity": {"account": [{"header": "x-account-id"}]},
        "routes": [{"path": "/v1/chat/completions", "dialect": "openai-chat"}],
        "tiers": {
            "default": {
                "requests": account,
                "tokens": "10000000/minute",
                "concurrency": 100,
                "max_output_tokens": 100,
            }
        },
        "clustering": {
            "threshold": 1.0,
            "signals": signals
            or {
                "org": {"header": "x-org-id", "explicit": True},
                "payment": {"header": CARD, "weight": 1.0, "max_fanout": 1000},
                "device": {"header": "x-device-fingerprint", "weight": 0.5, "max_fanout": 20},
                "ja4": {"header": "x-ja4", "weight": 0.5, "max_fanout": 3},
            },
        },
        "clusters": clusters,
        "admin": {"token": TOKEN},
        "storage": {"timeout": 5},
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def chat(
    g: Any, account: str, prompt: str = "hello there", headers: dict[str, str] | None = None
) -> httpx.Response:
    """One chat request, then let background linking and learning finish."""
    response = await g.client.post(
        "/v1/chat/completions",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]},
        headers={"x-account-id": account, **(headers or {})},
    )
    await g.guard.drain()
    return response


async def cluster_of(g: Any, account: str) -> str:
    response = await g.client.get(f"/_hydraguard/accounts/{account}", headers=ADMIN)
    assert response.status_code == 200, response.text
    cluster: str = response.json()["cluster"]
    return cluster


async def cluster_usage(g: Any, cluster: str, member: str) -> float:
    """The cluster's request-window usage, read from storage by the planner's own keys."""
    hg: HydraGuard = g.guard
    plan = hg.guard.gate.planner.plan(member, "default", 0, cluster)
    values = await hg.storage.primary.usage(plan.checks, hg.clock())
    used = {limit.rule: value for limit, value in zip(plan.limits, values, strict=True)}
    return used["cluster.requests.20/minute"]


async def test_accounts_sharing_a_payment_fingerprint_share_the_cluster_quota(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    statuses = []
    for _ in range(5):
        for i in range(10):
            response = await chat(g, f"hydra-{i}", headers={CARD: "card-shared"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                error = response.json()["error"]
                assert (error["rule"], error["reason"]) == ("cluster.requests.20/minute", "quota")
    assert statuses.count(200) == 20
    assert statuses[:20] == [200] * 20  # nothing refused before the cluster's quota is spent
    # Accounts with their own cards are their own clusters: the hydra's spending is not theirs.
    for i in range(3):
        served = [
            (await chat(g, f"loner-{i}", headers={CARD: f"card-{i}"})).status_code
            for _ in range(25)
        ]
        assert served.count(200) == 20
        assert served[:20] == [200] * 20


async def test_an_explicit_org_header_unions_outright(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    statuses = [
        (await chat(g, f"member-{i % 4}", headers={"x-org-id": "acme"})).status_code
        for i in range(40)
    ]
    assert statuses.count(200) == 20
    clusters = {await cluster_of(g, f"member-{i}") for i in range(4)}
    assert len(clusters) == 1
    assert await cluster_of(g, "outsider") not in clusters


async def test_a_common_ja4_shared_by_many_accounts_does_not_link(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    common = {"x-ja4": "t13d1516h2_8daaf6152771_02713d6af862"}
    statuses = []
    for i in range(12):
        for _ in range(2):
            statuses.append((await chat(g, f"crowd-{i}", headers=common)).status_code)
    # Two late members of the crowd also share a device: device 0.5 + the saturated JA4
    # (worth nothing past max_fanout) stays below the threshold.
    for account in ("crowd-10", "crowd-11"):
        await chat(g, account, headers={**common, "x-device-fingerprint": "dev-x"})
    # The control pair shares a device and a rare JA4: 0.5 + 0.5 links them.
    for account in ("pair-a", "pair-b"):
        await chat(g, account, headers={"x-ja4": "rare-ja4", "x-device-fingerprint": "dev-y"})
    assert statuses == [200] * 24  # linked, 24 requests would exceed one cluster's 20
    crowd = [await cluster_of(g, f"crowd-{i}") for i in range(12)]
    assert len(set(crowd)) == 12
    assert await cluster_of(g, "pair-a") == await cluster_of(g, "pair-b")


async def test_linking_never_resets_usage(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    for _ in range(9):
        assert (await chat(g, "early-a")).status_code == 200
        assert (await chat(g, "early-b")).status_code == 200
    assert await cluster_of(g, "early-a") != await cluster_of(g, "early-b")
    # Now both show the same card: one cluster, whose usage is the sum of both (9 + 9 + 2).
    assert (await chat(g, "early-b", headers={CARD: "card-late"})).status_code == 200
    assert (await chat(g, "early-a", headers={CARD: "card-late"})).status_code == 200
    merged = await cluster_of(g, "early-a")
    assert merged == await cluster_of(g, "early-b")
    for account in ("early-a", "early-b"):
        refused = await chat(g, account, headers={CARD: "card-late"})
        assert refused.status_code == 429, f"{account}: the merged cluster has spent 20 of 20"
        assert refused.json()["error"]["rule"] == "cluster.requests.20/minute"
    assert await cluster_usage(g, merged, "early-a") == 20
    view = (await g.client.get(f"/_hydraguard/clusters/{merged}", headers=ADMIN)).json()
    assert {limit["rule"]: limit["usage"] for limit in view["limits"]} == {
        "cluster.requests.20/minute": 20
    }


@pytest.mark.parametrize(("members", "expected"), [(1, 10), (2, 15), (5, 20)])
async def test_the_cluster_limit_grows_with_membership_up_to_its_cap(
    guarded: Any, kit: SimpleNamespace, members: int, expected: int
) -> None:
    text = policy(cluster="10/minute", growth={"per_member": 0.5, "max_factor": 2})
    g = await guarded(kit.build_upstream(kit.Upstream()), text, clock=kit.Clock())
    accounts = [f"team-{i}" for i in range(members)]
    statuses = [(await chat(g, a, headers={CARD: "card-team"})).status_code for a in accounts]
    for i in range(60):
        statuses.append(
            (await chat(g, accounts[i % members], headers={CARD: "card-team"})).status_code
        )
    assert statuses.count(200) == expected
    if members > 1:
        cluster = await cluster_of(g, accounts[0])
        view = (await g.client.get(f"/_hydraguard/clusters/{cluster}", headers=ADMIN)).json()
        assert view["size"] == members
        assert view["limits"][0]["limit"] == expected


class Entered(list[str]):
    """Accounts whose request reached the upstream; ``await entered.reach(n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def append(self, account: str) -> None:
        super().append(account)
        self.changed.set()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()


def held_upstream(entered: Entered, release: asyncio.Event) -> Starlette:
    """A model API that holds every request until ``release`` is set."""

    async def chat_endpoint(request: Request) -> Response:
        await request.body()
        entered.append(request.headers["x-account-id"])
        await release.wait()
        return JSONResponse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    return Starlette(routes=[Route("/v1/chat/completions", chat_endpoint, methods=["POST"])])


async def test_concurrency_is_limited_at_cluster_level(guarded: Any, kit: SimpleNamespace) -> None:
    entered = Entered()
    release = asyncio.Event()
    release.set()
    g = await guarded(
        held_upstream(entered, release), policy(cluster_concurrency=2), clock=kit.Clock()
    )
    for i in range(3):  # every member is linked before the test proper
        assert (await chat(g, f"conc-{i}", headers={CARD: "card-c"})).status_code == 200
    release.clear()
    entered.clear()
    running = [
        asyncio.create_task(chat(g, f"conc-{i}", headers={CARD: "card-c"})) for i in range(2)
    ]
    await entered.reach(2)
    third = await chat(g, "conc-2", headers={CARD: "card-c"})
    assert third.status_code == 429
    assert third.json()["error"]["rule"] == "cluster.concurrency"
    # An unlinked account is not held back by the cluster's slots.
    outsider = asyncio.create_task(chat(g, "outsider", headers={CARD: "card-other"}))
    await entered.reach(3)
    release.set()
    assert [r.status_code for r in await asyncio.gather(*running, outsider)] == [200, 200, 200]
    assert (await chat(g, "conc-2", headers={CARD: "card-c"})).status_code == 200


async def test_an_admin_unlink_holds_against_later_evidence(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    for account in ("ua", "ub"):
        assert (await chat(g, account, headers={CARD: "card-u"})).status_code == 200
    assert await cluster_of(g, "ua") == await cluster_of(g, "ub")
    response = await g.client.post(
        "/_hydraguard/unlink", json={"a": "ua", "b": "ub"}, headers=ADMIN
    )
    assert response.status_code == 200
    assert len(set(response.json()["clusters"])) == 2
    # The card again, and now an org id too: neither links them back.
    for account in ("ua", "ub", "ua", "ub"):
        await chat(g, account, headers={CARD: "card-u", "x-org-id": "org-u"})
    a, b = await cluster_of(g, "ua"), await cluster_of(g, "ub")
    assert a != b
    before = await cluster_usage(g, a, "ua")
    await chat(g, "ub", headers={CARD: "card-u"})
    assert await cluster_usage(g, a, "ua") == before  # ub's requests no longer count against ua
    # A third account with the card still joins one of them (automatic evidence works).
    await chat(g, "uc", headers={CARD: "card-u"})
    assert await cluster_of(g, "uc") in {a, b}


async def test_admin_link_merges_clusters_and_carries_usage(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    for _ in range(6):
        await chat(g, "la")
        await chat(g, "lb")
    response = await g.client.post(
        "/_hydraguard/links", json={"a": "la", "b": "lb", "reason": "ticket 42"}, headers=ADMIN
    )
    assert response.status_code == 200
    cluster = response.json()["cluster"]
    assert await cluster_of(g, "la") == cluster == await cluster_of(g, "lb")
    assert await cluster_usage(g, cluster, "la") == 12
    view = (await g.client.get(f"/_hydraguard/clusters/{cluster}", headers=ADMIN)).json()
    evidence = [e for link in view["links"] for e in link["evidence"]]
    assert [(e["signal"], e["value"]) for e in evidence] == [("manual", "ticket 42")]
    served = [(await chat(g, "lb")).status_code for _ in range(10)]
    assert served.count(200) == 8


async def test_admin_cluster_view_explains_members_evidence_and_usage(
    guarded: Any, kit: SimpleNamespace
) -> None:
    clock = kit.Clock()
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=clock)
    joined = {}
    for account in ("vc", "va", "vb"):
        joined[account] = clock.now
        assert (await chat(g, account, headers={CARD: "card-v"})).status_code == 200
        clock.now += 7
    cluster = await cluster_of(g, "va")
    response = await g.client.get(f"/_hydraguard/clusters/{cluster}", headers=ADMIN)
    assert response.status_code == 200
    view = response.json()
    assert view["cluster"] == cluster
    assert view["size"] == 3
    assert view["members"] == ["va", "vb", "vc"]
    links = {(link["a"], link["b"]): link["evidence"] for link in view["links"]}
    assert len(links) == 2  # the first holder of the card and each later one
    for evidence in links.values():
        assert [(e["signal"], e["value"]) for e in evidence] == [("payment", "card-v")]
    assert sorted(e["first_seen"] for ev in links.values() for e in ev) == [
        joined["va"],
        joined["vb"],
    ]
    assert view["limits"] == [
        {"rule": "cluster.requests.20/minute", "limit": 20, "window_seconds": 60, "usage": 3}
    ]
    missing = await g.client.get("/_hydraguard/clusters/c-0000000000000000", headers=ADMIN)
    assert missing.status_code == 404
    assert (await g.client.get(f"/_hydraguard/clusters/{cluster}")).status_code == 401


TEMPLATE_SIGNALS = {
    "subnet": {"client_ip": {"v4_prefix": 24}, "weight": 0.5, "max_fanout": 50},
    "template": {"template": {"bands": 4}, "weight": 0.6, "max_fanout": 50},
}
TEMPLATE = (
    "You are a careful tutor. Solve the following problem step by step and explain every "
    "step of your reasoning before the final answer: what is {a} times {b} plus {c}?"
)
OTHER_PROMPTS = [
    "Write me a haiku about autumn leaves falling in the park",
    "How do I configure nginx as a reverse proxy for a small flask app",
    "Summarise the plot of a famous play about a prince of Denmark briefly",
]


async def test_accounts_sending_one_template_link_after_learning(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(
        kit.build_upstream(kit.Upstream()), policy(signals=TEMPLATE_SIGNALS), clock=kit.Clock()
    )

    async def send(account: str, ip: str, prompt: str) -> None:
        response = await chat(g, account, prompt, headers={"x-forwarded-for": ip})
        assert response.status_code == 200

    for i in range(3):
        await send("tpl-a", "203.0.113.10", TEMPLATE.format(a=17 + i, b=23 * i, c=5))
        await send("tpl-b", "203.0.113.20", TEMPLATE.format(a=901 - i, b=4, c=77 * i))
        # Same subnet, other prompts: 0.5 alone does not link.
        await send("tpl-c", "203.0.113.30", OTHER_PROMPTS[i])
        # Same template, other subnet: 0.6 alone does not link.
        await send("tpl-d", "198.51.100.7", TEMPLATE.format(a=i, b=i + 1, c=i + 2))
    cluster = await cluster_of(g, "tpl-a")
    assert cluster == await cluster_of(g, "tpl-b")
    assert await cluster_of(g, "tpl-c") != cluster
    assert await cluster_of(g, "tpl-d") != cluster
    view = (await g.client.get(f"/_hydraguard/clusters/{cluster}", headers=ADMIN)).json()
    signals = {e["signal"] for link in view["links"] for e in link["evidence"]}
    assert signals == {"subnet", "template"}


async def test_a_template_links_once_an_account_repeats_it(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """A one-off prompt is no template: it stays out of the linking index (which would
    otherwise grow with every distinct prompt served); the second use makes it evidence."""
    g = await guarded(
        kit.build_upstream(kit.Upstream()), policy(signals=TEMPLATE_SIGNALS), clock=kit.Clock()
    )
    prompts = [TEMPLATE.format(a=3, b=4, c=5), TEMPLATE.format(a=6, b=7, c=8)]
    for account, ip in (("rep-p", "203.0.113.40"), ("rep-q", "203.0.113.50")):
        response = await chat(g, account, prompts[0], headers={"x-forwarded-for": ip})
        assert response.status_code == 200
    # Same subnet (0.5) and one shared prompt each: not linked, the prompt was a one-off.
    assert await cluster_of(g, "rep-p") != await cluster_of(g, "rep-q")
    for account, ip in (("rep-p", "203.0.113.40"), ("rep-q", "203.0.113.50")):
        response = await chat(g, account, prompts[1], headers={"x-forwarded-for": ip})
        assert response.status_code == 200
    # The template came back in each account's traffic: template (0.6) + subnet (0.5) link.
    assert await cluster_of(g, "rep-p") == await cluster_of(g, "rep-q")


async def test_cluster_gauges_are_exported_without_ids(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(), clock=kit.Clock())
    for i in range(3):
        await chat(g, f"gauge-{i}", headers={CARD: "card-g"})
    await chat(g, "gauge-solo", headers={CARD: "card-solo"})
    cluster = await cluster_of(g, "gauge-0")
    await g.guard.drain()  # on Redis the figures are refreshed in the background
    registry = g.registry
    text = generate_latest(registry).decode()
    assert registry.get_sample_value("hydraguard_clusters") == 1
    assert registry.get_sample_value("hydraguard_cluster_accounts") == 4
    assert registry.get_sample_value("hydraguard_cluster_size_clusters", {"size": "3-5"}) == 1
    assert registry.get_sample_value("hydraguard_cluster_links_total", {"signal": "payment"}) == 2
    for secret in ("gauge-", "card-", cluster):
        assert secret not in text


@pytest.mark.parametrize(("on_error", "status"), [("open", 200), ("closed", 503)])
async def test_linking_follows_the_storage_policy_when_redis_is_down(
    kit: SimpleNamespace, on_error: str, status: int
) -> None:
    doc = yaml.safe_load(policy())
    doc["storage"] = {"on_error": on_error, "timeout": 0.5}
    guard = HydraGuard(
        kit.build_upstream(kit.Upstream()),
        policy=kit.compile_yaml(yaml.safe_dump(doc)),
        storage="redis://127.0.0.1:1/0",  # nothing listens on port 1: connections are refused
        registry=CollectorRegistry(),
        clock=kit.Clock(),
    )
    transport = httpx.ASGITransport(app=guard, raise_app_exceptions=False)
    g = SimpleNamespace(
        guard=guard, client=httpx.AsyncClient(transport=transport, base_url="http://testserver")
    )
    try:
        for account in ("down-a", "down-b", "down-a"):
            response = await chat(g, account, headers={CARD: "card-down"})
            assert response.status_code == status
    finally:
        await g.client.aclose()
        await guard.aclose()


@pytest.mark.redis
@pytest.mark.parametrize(
    "storage_uri",
    [REDIS_URL],
    ids=["redis"],
)
async def test_replicas_on_one_redis_agree_on_clusters_and_share_their_quota(
    guarded: Any, kit: SimpleNamespace, storage_uri: str
) -> None:
    """Two HydraGuard replicas on one Redis: linking seen by one is the other's mapping, and
    the cluster quota is one quota, not one per replica."""
    flush = redis.Redis.from_url(storage_uri)  # the parametrization bypasses the fixture's flush
    flush.flushdb()
    flush.close()
    upstream = kit.build_upstream(kit.Upstream())
    clock = kit.Clock()
    first = await guarded(upstream, policy(cluster="10/minute"), clock=clock)
    second = await guarded(upstream, policy(cluster="10/minute"), clock=clock)
    # Each replica sees one account; both accounts pay with the same card.
    assert (await chat(first, "rep-a", headers={CARD: "card-shared"})).status_code == 200
    assert (await chat(second, "rep-b", headers={CARD: "card-shared"})).status_code == 200
    cluster = await cluster_of(first, "rep-a")
    assert cluster == await cluster_of(second, "rep-b") == await cluster_of(first, "rep-b")
    statuses = []
    for i in range(12):
        replica, account = (first, "rep-a") if i % 2 else (second, "rep-b")
        statuses.append((await chat(replica, account, headers={CARD: "card-shared"})).status_code)
    # 2 already spent + 8 more fill the shared 10/minute; the rest are refused on both replicas.
    assert statuses.count(200) == 8
    assert statuses[-2:] == [429, 429]


async def test_a_signal_from_scope_state_links_accounts(guarded: Any, kit: SimpleNamespace) -> None:
    """An auth layer in the same process hands over its evidence in scope["state"]."""
    signals = {"card": {"state": "card_fingerprint", "weight": 1.0, "max_fanout": 100}}
    g = await guarded(
        kit.build_upstream(kit.Upstream()), policy(signals=signals), clock=kit.Clock()
    )

    async def auth_layer(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        card = headers.get(b"x-test-card")
        if card is not None:
            scope.setdefault("state", {})["card_fingerprint"] = card.decode()
        await g.guard(scope, receive, send)

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=auth_layer), base_url="http://t")
    async with client:
        for account, card in (("a", "card-1"), ("b", "card-1"), ("c", "card-2")):
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"x-account-id": account, "x-test-card": card},
            )
            assert response.status_code == 200
            await g.guard.drain()
    assert await cluster_of(g, "a") == await cluster_of(g, "b")
    assert await cluster_of(g, "c") != await cluster_of(g, "a")
