"""Anomaly rules end to end: every action observable through the middleware, on memory
and Redis; then a scripted extraction run against the gateway beside an ordinary user.

One detector does the work in the small policies: extraction parameters with weight 1,
scored from the second request, so two logprob/logit_bias probes make an account's
risk 1.0 while an account that never probes stays at 0.
"""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry

from hydraguard.middleware import HydraGuard
from shared_redis import REDIS_URL

OTHER_DETECTORS = (
    "template_repetition",
    "reasoning_elicitation",
    "output_appetite",
    "volume",
    "timing_regularity",
    "activity_spread",
    "diversity",
)
PROBE = {
    "model": "m",
    "max_tokens": 1,
    "logprobs": True,
    "top_logprobs": 5,
    "logit_bias": {"50256": -100},
    "messages": [{"role": "user", "content": "Which token comes next?"}],
}
PLAIN = {
    "model": "m",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "Tell me about tea."}],
}


def policy(
    *rules: dict[str, Any],
    requests: str = "1000/minute",
    max_delayed: int = 1000,
    half_life: str = "1h",
) -> str:
    doc = {
        "name": "anomaly",
        "identity": {"account": [{"header": "x-account-id"}]},
        "routes": [{"path": "/v1/chat/completions", "dialect": "openai-chat"}],
        "tiers": {
            "default": {
                "requests": requests,
                "tokens": "10000000/minute",
                "concurrency": 100,
                "max_output_tokens": 100,
            }
        },
        "anomaly": {
            "max_delayed": max_delayed,
            "risk": {"half_life": half_life, "rescore_every": 1},
            "detectors": {
                **{name: {"enabled": False} for name in OTHER_DETECTORS},
                "extraction_params": {"weight": 1.0, "min_events": 2, "low": 0.1, "high": 0.5},
            },
            "rules": list(rules),
        },
        "admin": {"token": "s3cret"},
        "storage": {"timeout": 5},
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def send(g: Any, account: str, body: dict[str, Any]) -> httpx.Response:
    response = await g.client.post(
        "/v1/chat/completions", json=body, headers={"x-account-id": account}
    )
    await g.guard.drain()  # learning runs after the response: let it land before the next request
    return response


async def make_risky(g: Any, account: str) -> None:
    for _ in range(2):
        assert (await send(g, account, PROBE)).status_code == 200
    assert g.guard.guard.risk.risk("account", account, g.guard.clock()) == 1.0


def actions(registry: CollectorRegistry, mode: str = "enforce", action: str | None = None) -> float:
    """Sum of hydraguard_anomaly_actions_total over the samples of one mode (and action)."""
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name != "hydraguard_anomaly_actions_total" or sample.labels["mode"] != mode:
                continue
            if action is None or sample.labels["action"] == action:
                total += sample.value
    return total


def forwarded(upstream: Any) -> list[dict[str, Any]]:
    return [json.loads(body) for body in upstream.bodies]


async def test_throttle_refuses_a_risky_account_earlier(guarded: Any, kit: SimpleNamespace) -> None:
    rule = {"name": "slow-down", "when": {"risk_gte": 0.5}, "action": "throttle", "factor": 0.5}
    g = await guarded(
        kit.build_upstream(kit.Upstream()), policy(rule, requests="10/minute"), clock=kit.Clock()
    )
    await make_risky(g, "risky")
    risky = [await send(g, "risky", PLAIN) for _ in range(6)]
    calm = [await send(g, "calm", PLAIN) for _ in range(11)]
    # 2 probes + 3 more fill the halved limit of 5; the calm account gets all 10.
    assert [r.status_code for r in risky] == [200, 200, 200, 429, 429, 429]
    assert [r.status_code for r in calm] == [200] * 10 + [429]
    assert {r.headers["x-ratelimit-limit-requests"] for r in risky[:3]} == {"5"}
    assert calm[0].headers["x-ratelimit-limit-requests"] == "10"
    error = risky[3].json()["error"]
    assert (error["reason"], error["rule"]) == ("quota", "tier.default.requests.10/minute")
    labels = {"policy": "anomaly", "rule": "slow-down", "action": "throttle", "mode": "enforce"}
    assert g.registry.get_sample_value("hydraguard_anomaly_actions_total", labels) == 6


async def test_cap_max_tokens_rewrites_what_the_upstream_receives(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    rule = {"name": "cap", "when": {"risk_gte": 0.5}, "action": "cap_max_tokens", "max_tokens": 3}
    g = await guarded(kit.build_upstream(upstream), policy(rule), clock=kit.Clock())
    await make_risky(g, "risky")
    assert (await send(g, "risky", PLAIN)).status_code == 200
    assert (
        await send(g, "risky", {k: v for k, v in PLAIN.items() if k != "max_tokens"})
    ).status_code == 200
    assert (await send(g, "calm", PLAIN)).status_code == 200
    bodies = forwarded(upstream)
    assert [b.get("max_tokens") for b in bodies[2:]] == [3, 3, 50]
    assert bodies[2]["messages"] == PLAIN["messages"]
    for raw, headers in zip(upstream.bodies, upstream.headers, strict=True):
        assert int(headers["content-length"]) == len(raw)


async def test_strip_removes_probe_parameters_from_the_forwarded_body(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    g = await guarded(kit.build_upstream(upstream), policy(STRIP), clock=kit.Clock())
    assert (await send(g, "calm", PROBE)).status_code == 200  # one probe is no pattern
    await make_risky(g, "risky")
    assert (await send(g, "risky", PROBE)).status_code == 200
    calm, *_, stripped = forwarded(upstream)
    assert calm == PROBE
    assert stripped == {
        k: v for k, v in PROBE.items() if k not in ("logprobs", "top_logprobs", "logit_bias")
    }
    assert int(upstream.headers[-1]["content-length"]) == len(upstream.bodies[-1])


STRIP = {
    "name": "no-probes",
    "when": {"risk_gte": 0.5},
    "action": "strip",
    "params": ["logprobs", "top_logprobs", "logit_bias"],
}


@pytest.mark.redis
@pytest.mark.parametrize("storage_uri", [REDIS_URL], ids=["redis"])
async def test_replicas_on_one_redis_share_risk(
    guarded: Any, kit: SimpleNamespace, storage_uri: str
) -> None:
    """A prober caught by one replica is stripped by another that has seen one probe of it:
    the risk is shared, not only the blocks."""
    flush = redis.Redis.from_url(storage_uri)  # the parametrization bypasses the fixture's flush
    flush.flushdb()
    flush.close()
    upstream = kit.Upstream()
    clock = kit.Clock()
    first = await guarded(kit.build_upstream(upstream), policy(STRIP), clock=clock)
    second = await guarded(kit.build_upstream(upstream), policy(STRIP), clock=clock)
    await make_risky(first, "risky")
    # The second replica's first decision reads the shared risk in the background...
    assert (await send(second, "risky", PROBE)).status_code == 200
    assert second.guard.guard.risk.risk("account", "risky", clock()) == 1.0
    assert second.guard.guard.risk.risk("account", "calm", clock()) == 0.0
    # ...and its next ones act on it; an account nobody caught is left alone.
    assert (await send(second, "risky", PROBE)).status_code == 200
    assert (await send(second, "calm", PROBE)).status_code == 200
    *_, seen_alone, stripped, calm = forwarded(upstream)
    assert seen_alone == PROBE
    assert stripped == {
        k: v for k, v in PROBE.items() if k not in ("logprobs", "top_logprobs", "logit_bias")
    }
    assert calm == PROBE
    # A subject found without a shared risk is read again later, not on every decision:
    # "late" was read (nothing shared yet) before the first replica caught it.
    assert (await send(second, "late", PLAIN)).status_code == 200
    await make_risky(first, "late")
    clock.now += 10
    await send(second, "late", PLAIN)
    assert second.guard.guard.risk.risk("account", "late", clock()) == 0.0
    clock.now += 25  # past the 30 s re-read of a subject that had nothing shared
    await send(second, "late", PLAIN)
    assert second.guard.guard.risk.risk("account", "late", clock()) > 0.5


async def test_risk_is_shared_on_shared_storage_unless_turned_off(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """One process (memory): nothing to share with, no background reads (and replay stays
    exact); on Redis sharing is on unless the policy says ``share_risk: false``."""
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(STRIP), clock=kit.Clock())
    assert (g.guard.guard.sharing is None) == (not g.guard.storage.primary.shared)
    off = yaml.safe_load(policy(STRIP))
    off["anomaly"]["share_risk"] = False
    g = await guarded(kit.build_upstream(kit.Upstream()), yaml.safe_dump(off), clock=kit.Clock())
    assert g.guard.guard.sharing is None


async def test_delay_holds_without_blocking_and_bounds_the_held(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    rule = {"name": "hold", "when": {"risk_gte": 0.5}, "action": "delay", "seconds": 3600}
    g = await guarded(kit.build_upstream(upstream), policy(rule, max_delayed=1), clock=kit.Clock())
    await make_risky(g, "risky")
    held = asyncio.create_task(send(g, "risky", PLAIN))
    async with asyncio.timeout(10):
        while g.guard.guard._held < 1:  # noqa: ASYNC110 - the guard's hold count has no event
            await asyncio.sleep(0.005)
    # The loop is free: another account is served while the risky request waits.
    assert (await send(g, "calm", PLAIN)).status_code == 200
    over = await send(g, "risky", PLAIN)
    assert over.status_code == 429
    assert over.json()["error"]["reason"] == "throttled"
    assert over.json()["error"]["rule"] == "hold"
    assert not held.done()
    assert len(upstream.bodies) == 3  # two probes and the calm request; nothing risky got through
    # A client that gives up while held leaves nothing reserved behind.
    held.cancel()
    await asyncio.gather(held, return_exceptions=True)
    assert g.guard.guard._held == 0
    usage = await g.usage("risky")
    assert usage["tier.default.concurrency"] == 0


async def test_a_client_that_leaves_while_held_is_neither_served_nor_charged(
    guarded: Any, kit: SimpleNamespace
) -> None:
    # uvicorn does not cancel a request whose client left: its next receive() says
    # http.disconnect. Unheard, the request was forwarded after the hold and charged.
    upstream = kit.Upstream()
    rule = {"name": "hold", "when": {"risk_gte": 0.5}, "action": "delay", "seconds": 3600}
    g = await guarded(kit.build_upstream(upstream), policy(rule), clock=kit.Clock())
    await make_risky(g, "risky")
    before = await g.usage("risky")
    parts = [json.dumps(PLAIN).encode()]
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if parts:
            return {"type": "http.request", "body": parts.pop(), "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = kit.http_scope("/v1/chat/completions", headers=[(b"x-account-id", b"risky")])
    task = asyncio.create_task(g.guard(scope, receive, send))
    async with asyncio.timeout(10):
        while g.guard.guard._held < 1:  # noqa: ASYNC110 - the guard's hold count has no event
            await asyncio.sleep(0.005)
    assert (await g.usage("risky"))["tier.default.concurrency"] == 1
    left.set()
    async with asyncio.timeout(10):  # let go at once, not after the hour
        await task
    assert sent == [] and len(upstream.bodies) == 2  # the two probes only
    assert g.guard.guard._held == 0
    after = await g.usage("risky")
    for kind in ("tokens", "concurrency"):
        rule_name = f"tier.default.{kind}" + ("" if kind == "concurrency" else ".10000000/minute")
        assert after[rule_name] == before[rule_name], kind
    assert (
        after["tier.default.requests.1000/minute"]
        == before["tier.default.requests.1000/minute"] + 1
    )


async def test_a_short_delay_then_serves_the_request(guarded: Any, kit: SimpleNamespace) -> None:
    upstream = kit.Upstream()
    rule = {"name": "hold", "when": {"risk_gte": 0.5}, "action": "delay", "seconds": "50ms"}
    g = await guarded(kit.build_upstream(upstream), policy(rule), clock=kit.Clock())
    await make_risky(g, "risky")
    assert (await send(g, "risky", PLAIN)).status_code == 200
    assert forwarded(upstream)[-1] == PLAIN
    labels = {"policy": "anomaly", "rule": "hold", "action": "delay", "mode": "enforce"}
    assert g.registry.get_sample_value("hydraguard_anomaly_actions_total", labels) == 1


async def test_block_refuses_with_the_rule_and_no_detector_internals(
    guarded: Any, kit: SimpleNamespace, storage_uri: str
) -> None:
    clock = kit.Clock()
    upstream = kit.Upstream()
    rule = {"name": "stop-extraction", "when": {"risk_gte": 0.5}, "action": "block", "seconds": 60}
    g = await guarded(kit.build_upstream(upstream), policy(rule, half_life="1m"), clock=clock)
    await make_risky(g, "risky")
    refused = await send(g, "risky", PLAIN)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["reason"], error["rule"]) == ("risk", "stop-extraction")
    for internal in ("extraction_params", "detector", "risk_score", "1.0"):
        assert internal not in refused.text
    assert int(refused.headers["retry-after"]) > 0
    again = await send(g, "risky", PROBE)
    assert (again.status_code, again.json()["error"]["reason"]) == (429, "risk")
    assert (await send(g, "calm", PLAIN)).status_code == 200
    assert len(upstream.bodies) == 3
    view = (
        await g.client.get(
            "/_hydraguard/accounts/risky", headers={"authorization": "Bearer s3cret"}
        )
    ).json()
    assert view["blocked_seconds"] > 0
    assert view["risk"] == 1.0
    labels = {"policy": "anomaly", "rule": "stop-extraction", "action": "block", "mode": "enforce"}
    assert g.registry.get_sample_value("hydraguard_anomaly_actions_total", labels) == 2
    if storage_uri.startswith("memory"):
        # The block lasts its duration: once the risk has decayed and 60 s have passed, served.
        # (Redis expires the block flag on its own clock, which the test clock cannot move.)
        clock.now += 3600
        assert (await send(g, "risky", PLAIN)).status_code == 200


async def test_flag_records_in_metrics_only(guarded: Any, kit: SimpleNamespace) -> None:
    upstream = kit.Upstream()
    rule = {"name": "watch", "when": {"risk_gte": 0.5}, "action": "flag"}
    g = await guarded(
        kit.build_upstream(upstream), policy(rule, requests="3/minute"), clock=kit.Clock()
    )
    await make_risky(g, "risky")
    response = await send(g, "risky", PROBE)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert upstream.bodies[-1] == upstream.bodies[0]  # forwarded byte for byte
    labels = {"policy": "anomaly", "rule": "watch", "action": "flag", "mode": "enforce"}
    assert g.registry.get_sample_value("hydraguard_anomaly_actions_total", labels) == 1
    contributions = {"detector": "extraction_params"}
    assert (
        g.registry.get_sample_value(
            "hydraguard_anomaly_detector_contributions_total", contributions
        )
        == 1
    )


async def test_a_shadow_rule_changes_nothing_but_is_counted(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.Upstream()
    rules = (
        {
            "name": "would-strip",
            "when": {"risk_gte": 0.5},
            "action": "strip",
            "params": ["logprobs"],
            "mode": "shadow",
        },
        {
            "name": "would-block",
            "when": {"risk_gte": 0.5},
            "action": "block",
            "seconds": 60,
            "mode": "shadow",
        },
    )
    g = await guarded(kit.build_upstream(upstream), policy(*rules), clock=kit.Clock())
    await make_risky(g, "risky")
    for _ in range(2):
        assert (await send(g, "risky", PROBE)).status_code == 200
    assert upstream.bodies[-1] == upstream.bodies[0]
    assert actions(g.registry, "shadow", "strip") == 2
    assert actions(g.registry, "shadow", "block") == 2
    assert actions(g.registry, "enforce") == 0
    # Each is counted under its own rule's name (they were all labelled rule="shadow").
    for rule, action in (("would-strip", "strip"), ("would-block", "block")):
        labels = {"policy": "anomaly", "rule": rule, "action": action, "mode": "shadow"}
        assert g.registry.get_sample_value("hydraguard_anomaly_actions_total", labels) == 2


async def test_rules_acting_together_are_each_counted_under_their_own_name(
    guarded: Any, kit: SimpleNamespace
) -> None:
    rules = (
        {"name": "watch", "when": {"risk_gte": 0.5}, "action": "flag"},
        {"name": "slow-down", "when": {"risk_gte": 0.5}, "action": "throttle", "factor": 0.5},
    )
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(*rules), clock=kit.Clock())
    await make_risky(g, "risky")
    assert (await send(g, "risky", PLAIN)).status_code == 200
    counted = {
        (sample.labels["rule"], sample.labels["action"]): sample.value
        for metric in g.registry.collect()
        for sample in metric.samples
        if sample.name == "hydraguard_anomaly_actions_total"
    }
    assert {key: n for key, n in counted.items() if n} == {
        ("watch", "flag"): 1,
        ("slow-down", "throttle"): 1,
    }


# --- the scripted extraction run against the gateway -------------------------------------

# The default detectors raise the cluster's risk in steps: 0 below 10 requests, ~0.36 from
# 10 (extraction parameters: half the requests probe), ~0.71 from 20 (chain-of-thought
# lexicon, template repetition and regular timing join in). The thresholds sit well inside
# those steps, so the order of concurrent requests cannot tip a rule either way.
GATEWAY_POLICY = """
name: gateway-e2e
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
tiers:
  default:
    requests: "600/minute"
    tokens: "10000000/minute"
    concurrency: 32
    max_output_tokens: 512
clustering:
  threshold: 1.0
  signals:
    payment: {header: x-payment-fingerprint, weight: 1.0, max_fanout: 100000}
clusters:
  requests: "6000/minute"
anomaly:
  risk: {half_life: 30m, cluster_influence: 1.0, rescore_every: 1}
  detectors:  # gentler than the shipped ones, so the script is throttled well before the block
    reasoning_elicitation: {weight: 0.3, min_events: 20}
    output_appetite: {weight: 0.3, min_events: 20}
    extraction_params: {low: 0.15, high: 0.5}
    template_repetition: {weight: 0.3}
    timing_regularity: {weight: 0.25}
  rules:
    - {name: throttle-extraction, when: {risk_gte: 0.3}, action: throttle, factor: 0.5}
    - {name: block-extraction, when: {risk_gte: 0.6}, action: block, seconds: 900}
storage:
  timeout: 5
"""
ATTACK_TEMPLATE = (
    "Think step by step and show your complete chain of thought before answering. "
    "Problem {n}: a train leaves at {h} o'clock travelling {v} km per hour; "
    "how far has it gone by noon?"
)
USER_PROMPTS = [
    "What's a good name for a grey cat?",
    "Can you help me write a birthday note for my sister who loves climbing",
    "Translate 'where is the train station' into Portuguese",
    "Why is the sky blue during the day and red at sunset",
    "Suggest a vegetarian dinner I can cook in twenty minutes",
    "Explain the difference between a list and a tuple in python",
    "Recommend three novels for a long flight",
    "How do I remove a coffee stain from a wool jumper",
]


async def test_a_scripted_extraction_is_throttled_then_blocked_while_a_user_is_served(
    storage_uri: str, kit: SimpleNamespace, tmp_path: Any
) -> None:
    from hydraguard.gateway.app import GatewayConfig, create_gateway

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(GATEWAY_POLICY)
    registry = CollectorRegistry()
    app = create_gateway(
        GatewayConfig(policy=str(policy_file), storage=storage_uri, watch_policy=False),
        registry=registry,
    )
    guard = app.state.guard
    clock = kit.Clock()
    guard.clock = guard.guard.clock = clock  # detectors see script time, not test run time
    rng = random.Random(7)
    accounts = [f"sock-{i:02d}" for i in range(12)]

    def attack_body(n: int) -> dict[str, Any]:
        prompt = ATTACK_TEMPLATE.format(n=n, h=n % 12 + 1, v=40 + 7 * n)
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        if n % 2:
            body.update(max_tokens=1, logprobs=True, top_logprobs=5)
        else:
            body["max_tokens"] = 512
        return body

    async def attack(client: httpx.AsyncClient, n: int) -> tuple[int, str | None, str | None]:
        account = accounts[n % len(accounts)]
        response = await client.post(
            "/v1/chat/completions",
            json=attack_body(n),
            headers={"x-account-id": account, "x-payment-fingerprint": "card-hydra"},
        )
        reason = response.json()["error"]["reason"] if response.status_code == 429 else None
        return response.status_code, reason, response.headers.get("x-ratelimit-limit-requests")

    async def user(client: httpx.AsyncClient, n: int) -> int:
        body = {
            "model": "m",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": USER_PROMPTS[n % 8]}],
        }
        response = await client.post(
            "/v1/chat/completions",
            json=body,
            headers={"x-account-id": "human", "x-payment-fingerprint": "card-own"},
        )
        return response.status_code

    def counted(action: str) -> float:
        labels = {
            "policy": "gateway-e2e",
            "rule": f"{action}-extraction",
            "action": action,
            "mode": "enforce",
        }
        return registry.get_sample_value("hydraguard_anomaly_actions_total", labels) or 0.0

    timeline: list[tuple[int, list[tuple[int, str | None, str | None]], float, float]] = []
    user_statuses: list[int] = []
    next_user = clock.now
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            n = 0
            for tick in range(60):
                # The script: every 2 s, four sock puppets fire at once; the human now and then.
                batch = [attack(client, n + i) for i in range(4)]
                n += 4
                human = clock.now >= next_user
                if human:
                    next_user = clock.now + rng.uniform(5, 15)
                ordinary = asyncio.create_task(user(client, tick)) if human else None
                results = list(await asyncio.gather(*batch))
                if ordinary is not None:
                    user_statuses.append(await ordinary)
                await guard.drain()
                timeline.append((tick, results, counted("throttle"), counted("block")))
                clock.now += 2.0
    finally:
        await guard.aclose()

    first_throttle = next(t for t, _, throttled, _ in timeline if throttled)
    first_block = next(t for t, _, _, blocked in timeline if blocked)
    assert 0 < first_throttle < first_block  # served at first, then throttled, then blocked
    served = {
        (status, limit)
        for _, results, *_ in timeline[:first_throttle]
        for status, _, limit in results
    }
    assert served == {(200, "600")}
    # Throttled: still served, on half the account's limit, and only between the two.
    halved = [t for t, results, *_ in timeline for status, _, limit in results if limit == "300"]
    assert halved and first_throttle <= min(halved) and max(halved) <= first_block
    blocked = [
        (status, reason)
        for _, results, *_ in timeline[first_block + 1 :]
        for status, reason, _ in results
    ]
    assert len(blocked) > 100 and set(blocked) == {(429, "risk")}
    assert len(user_statuses) >= 8
    assert user_statuses == [200] * len(user_statuses)


async def test_sharing_with_redis_down_never_fails_a_request(kit: SimpleNamespace) -> None:
    """Risk sharing is best effort: with Redis unreachable, requests follow on_error (open),
    the failures are counted, and once the breaker is open sharing stops asking."""
    doc = yaml.safe_load(policy(STRIP))
    doc["storage"] = {"on_error": "open", "timeout": 0.2, "breaker_failures": 2}
    registry = CollectorRegistry()
    guard = HydraGuard(
        kit.build_upstream(kit.Upstream()),
        policy=kit.compile_yaml(yaml.safe_dump(doc)),
        storage="redis://127.0.0.1:1/0",  # nothing listens on port 1: connections are refused
        registry=registry,
        clock=kit.Clock(),
    )
    transport = httpx.ASGITransport(app=guard, raise_app_exceptions=False)
    g = SimpleNamespace(
        guard=guard, client=httpx.AsyncClient(transport=transport, base_url="http://testserver")
    )
    try:
        statuses = [(await send(g, f"down-{i % 3}", PROBE)).status_code for i in range(12)]
        assert statuses == [200] * 12
        assert guard.storage.breaker.opened_at is not None
        errors = registry.get_sample_value("hydraguard_storage_errors_total", {"operation": "risk"})
        assert errors is not None and errors >= 1
        later = [(await send(g, f"down-{i}", PROBE)).status_code for i in range(3, 9)]
        assert later == [200] * 6
        # The breaker is open: the new accounts' reads were not even tried.
        assert (
            registry.get_sample_value("hydraguard_storage_errors_total", {"operation": "risk"})
            == errors
        )
    finally:
        await g.client.aclose()
        await guard.aclose()


BLOCK = {"name": "stop-extraction", "when": {"risk_gte": 0.5}, "action": "block", "seconds": 600}
ADMIN = {"authorization": "Bearer s3cret"}


async def test_an_operator_unblock_lifts_an_anomaly_block(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """Lifting the block flag alone let the same risk block the account again at its next
    request: the unblock also clears the evidence, and new evidence counts afresh."""
    g = await guarded(kit.build_upstream(kit.Upstream()), policy(BLOCK), clock=kit.Clock())
    await make_risky(g, "risky")
    assert (await send(g, "risky", PLAIN)).status_code == 429
    unblocked = await g.client.post("/_hydraguard/accounts/risky/unblock", headers=ADMIN)
    assert unblocked.json() == {
        "account": "risky",
        "was_blocked": True,
        "risk_cleared": True,
        "cluster_blocked": None,
    }
    assert [(await send(g, "risky", PLAIN)).status_code for _ in range(3)] == [200] * 3
    assert g.guard.guard.risk.risk("account", "risky", g.guard.clock()) == 0.0
    # The same behaviour again is caught again, on new evidence (min_events: 2 probes).
    assert [(await send(g, "risky", PROBE)).status_code for _ in range(2)] == [200, 200]
    assert (await send(g, "risky", PLAIN)).status_code == 429


@pytest.mark.redis
@pytest.mark.parametrize("storage_uri", [REDIS_URL], ids=["redis"])
async def test_an_unblock_through_one_replica_reaches_the_others(
    guarded: Any, kit: SimpleNamespace, storage_uri: str
) -> None:
    flush = redis.Redis.from_url(storage_uri)  # the parametrization bypasses the fixture's flush
    flush.flushdb()
    flush.close()
    clock = kit.Clock()
    first = await guarded(kit.build_upstream(kit.Upstream()), policy(BLOCK), clock=clock)
    second = await guarded(kit.build_upstream(kit.Upstream()), policy(BLOCK), clock=clock)
    await make_risky(second, "risky")  # the evidence is the second replica's own
    await send(first, "risky", PLAIN)  # the first reads the shared risk behind this one...
    assert (await send(first, "risky", PLAIN)).status_code == 429  # ...and blocks on it
    await first.client.post("/_hydraguard/accounts/risky/unblock", headers=ADMIN)
    assert (await send(first, "risky", PLAIN)).status_code == 200
    # The second replica hears of it at its next read of the shared state (every 5 s, or
    # 30 s after a read that found nothing shared, as here); until then its own evidence
    # still blocks (and sets the block flag again, which it clears when it hears).
    clock.now += 31
    await send(second, "risky", PLAIN)  # the read happens behind this decision
    assert [(await send(r, "risky", PLAIN)).status_code for r in (second, first)] == [200, 200]
    assert second.guard.guard.risk.risk("account", "risky", clock()) == 0.0


CLUSTER_BLOCK = {
    "name": "stop-cluster",
    "when": {"cluster_risk_gte": 0.5},
    "action": "block",
    "seconds": 600,
}


def org_policy(*rules: dict[str, Any]) -> str:
    """``policy`` with accounts of one x-org-id linked into one cluster."""
    doc = yaml.safe_load(policy(*rules))
    doc["clustering"] = {
        "enabled": True,
        "signals": {"org": {"header": "x-org-id", "explicit": True}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def send_org(g: Any, account: str, body: dict[str, Any]) -> httpx.Response:
    response = await g.client.post(
        "/v1/chat/completions", json=body, headers={"x-account-id": account, "x-org-id": "acme"}
    )
    await g.guard.drain()
    return response


async def test_an_operator_unblocks_a_cluster_and_its_members(
    guarded: Any, kit: SimpleNamespace
) -> None:
    """A cluster's block refuses every member; unblocking a member alone says the cluster
    still blocks it, and unblocking the cluster frees them all."""
    g = await guarded(
        kit.build_upstream(kit.Upstream()), org_policy(CLUSTER_BLOCK), clock=kit.Clock()
    )
    assert (await send_org(g, "quiet", PLAIN)).status_code == 200
    for _ in range(2):
        await send_org(g, "prober", PROBE)
    cluster = (await g.client.get("/_hydraguard/accounts/quiet", headers=ADMIN)).json()["cluster"]
    assert g.guard.guard.risk.risk("cluster", cluster, g.guard.clock()) >= 0.5
    # On Redis a link reaches an account seen before it at the account's first request
    # after 10 s (README, "Clusters"), and counts from the request after that.
    g.guard.clock.now += 11
    await send_org(g, "quiet", PLAIN)
    assert (await send_org(g, "quiet", PLAIN)).status_code == 429
    assert (await send_org(g, "prober", PLAIN)).status_code == 429

    one = await g.client.post("/_hydraguard/accounts/quiet/unblock", headers=ADMIN)
    assert one.json()["was_blocked"] is True and one.json()["cluster_blocked"] == cluster
    assert (await send_org(g, "quiet", PLAIN)).status_code == 429  # as the answer said

    whole = await g.client.post(f"/_hydraguard/clusters/{cluster}/unblock", headers=ADMIN)
    assert whole.status_code == 200
    assert whole.json() == {
        "cluster": cluster,
        "risk_cleared": True,
        "accounts_unblocked": ["prober", "quiet"],
        "still_blocked": [],
    }
    assert g.guard.guard.risk.risk("cluster", cluster, g.guard.clock()) == 0.0
    assert [(await send_org(g, a, PLAIN)).status_code for a in ("quiet", "prober")] == [200, 200]
    freed = await g.client.post("/_hydraguard/accounts/quiet/unblock", headers=ADMIN)
    assert freed.json()["cluster_blocked"] is None


async def test_unblocking_an_unknown_cluster_is_a_404(guarded: Any, kit: SimpleNamespace) -> None:
    g = await guarded(
        kit.build_upstream(kit.Upstream()), org_policy(CLUSTER_BLOCK), clock=kit.Clock()
    )
    response = await g.client.post("/_hydraguard/clusters/c-nope/unblock", headers=ADMIN)
    assert response.status_code == 404 and "c-nope" in response.json()["error"]
