"""The middleware writes the traffic-log format, and replay reads it back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from hydraguard import HydraGuard
from hydraguard.cli import main
from hydraguard.gateway.mock import create_mock_app
from hydraguard.policy.compiled import compile_policy
from hydraguard.policy.loader import parse_policy

POLICY = """
name: audited
tiers:
  default:
    requests: "2/minute"
audit:
  enabled: true
  path: {path}
"""


async def test_audit_log_lines_are_the_traffic_format_and_replay_reproduces_them(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY.format(path=log))
    policy = compile_policy(parse_policy(policy_file.read_text()), str(policy_file))
    guard = HydraGuard(create_mock_app(), policy=policy, registry=CollectorRegistry())
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    headers = {"authorization": "Bearer sk-very-secret", "x-payment-fingerprint": "card-1"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as client:
        statuses = [
            (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code
            for _ in range(3)
        ]
        # A route no policy route names is not a model call: not logged.
        await client.post("/v1/other", json={})
    await guard.aclose()
    assert statuses == [200, 200, 429]

    text = log.read_text()
    assert "sk-very-secret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["status"] for line in lines] == [200, 200, 429]
    first = lines[0]
    assert first["account"].startswith("key-")
    assert first["headers"]["x-payment-fingerprint"] == "card-1"
    assert "authorization" not in first["headers"]
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["body"] == body
    assert first["usage"]["output_tokens"] == 5
    assert lines[2]["usage"] is None
    assert lines[0]["ts"] <= lines[1]["ts"] <= lines[2]["ts"]

    decisions = tmp_path / "decisions.jsonl"
    args = ["replay", str(log), "--policy", str(policy_file), "--decisions", str(decisions)]
    assert await asyncio.to_thread(main, args) == 0  # the CLI runs its own event loop
    replayed = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [d["admitted"] for d in replayed] == [True, True, False]
    assert replayed[2]["rule"] == "tier.default.requests.2/minute"
    assert replayed[0]["output_tokens"] == 5


async def test_lines_are_in_arrival_order_when_a_long_stream_finishes_last(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    policy = compile_policy(parse_policy(POLICY.format(path=log)), "audited")
    guard = HydraGuard(
        create_mock_app(token_delay=0.01), policy=policy, registry=CollectorRegistry()
    )
    long_body = {"model": "m", "max_tokens": 30, "stream": True, "messages": [{"role": "user", "content": "long"}]}  # fmt: skip
    short_body = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "short"}]}
    finished: list[str] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as client:

        async def post(account: str, body: dict[str, object], after: float) -> None:
            await asyncio.sleep(after)
            response = await client.post(
                "/v1/chat/completions", json=body, headers={"x-account-id": account}
            )
            assert response.status_code == 200
            finished.append(account)

        await asyncio.gather(post("streamer", long_body, 0), post("quick", short_body, 0.05))
    await guard.aclose()
    assert finished == ["quick", "streamer"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["account"] for line in lines] == ["streamer", "quick"]  # arrival order
    assert lines[0]["ts"] < lines[1]["ts"]
    assert lines[0]["usage"]["output_tokens"] == 30


DELAYED = """
name: audited-delay
identity:
  account:
    - header: x-account-id
tiers:
  default:
    requests: "100/minute"
anomaly:
  max_delayed: 1
  risk: {half_life: 1h, rescore_every: 1}
  detectors:
    template_repetition: {enabled: false}
    reasoning_elicitation: {enabled: false}
    output_appetite: {enabled: false}
    volume: {enabled: false}
    timing_regularity: {enabled: false}
    activity_spread: {enabled: false}
    diversity: {enabled: false}
    extraction_params: {weight: 1.0, min_events: 2, low: 0.1, high: 0.5}
  rules:
    - {name: hold, when: {risk_gte: 0.5}, action: delay, seconds: 3600}
audit:
  enabled: true
  path: {path}
"""


async def test_a_request_refused_while_others_are_held_has_its_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    policy = compile_policy(parse_policy(DELAYED.replace("{path}", str(log))), "audited-delay")
    guard = HydraGuard(create_mock_app(), policy=policy, registry=CollectorRegistry())
    probe = {"model": "m", "max_tokens": 1, "logprobs": True, "top_logprobs": 5, "messages": [{"role": "user", "content": "next?"}]}  # fmt: skip
    headers = {"x-account-id": "prober"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as client:
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=probe, headers=headers)).status_code == 200  # fmt: skip
            await guard.drain()  # learning lands before the next request
        held = asyncio.create_task(client.post("/v1/chat/completions", json=probe, headers=headers))  # fmt: skip
        async with asyncio.timeout(10):
            while guard.guard._held < 1:  # noqa: ASYNC110 - the hold count has no event
                await asyncio.sleep(0.005)
        refused = await client.post("/v1/chat/completions", json=probe, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["reason"] == "throttled"
        held.cancel()  # the held request ends without a line: later lines do not wait for it
        await asyncio.gather(held, return_exceptions=True)
        assert guard.audit is not None
        await asyncio.to_thread(guard.audit._listener.queue.join)  # the writer is done
        lines = [json.loads(line) for line in log.read_text().splitlines()]
    await guard.aclose()
    assert [line["status"] for line in lines] == [200, 200, 429]
    assert lines[2]["usage"] is None


async def test_a_request_with_no_answer_is_logged_as_what_the_client_got(tmp_path: Path) -> None:
    # An app that raises before answering: the server sends 500, and so says the log (a
    # status 0 would replay as a 200 served in full). A client that leaves first: 499.
    log = tmp_path / "audit.jsonl"
    policy = compile_policy(parse_policy(POLICY.format(path=log)), "audited")
    started = asyncio.Event()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["headers"] and dict(scope["headers"]).get(b"x-mode") == b"hang":
            started.set()
            await asyncio.sleep(3600)
        raise RuntimeError("upstream bug")

    guard = HydraGuard(app, policy=policy, registry=CollectorRegistry())
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard, raise_app_exceptions=False), base_url="http://t"
    ) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 500
        hanging = asyncio.create_task(
            client.post("/v1/chat/completions", json=body, headers={"x-mode": "hang"})
        )
        await started.wait()
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
    await guard.aclose()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["status"] for line in lines] == [500, 499]
    assert [line["usage"]["output_tokens"] for line in lines] == [0, 0]


STATEFUL = """
name: audited-state
identity:
  account:
    - state: user
  tier:
    state: plan
tiers:
  default:
    requests: "1/minute"
  pro:
    requests: "3/minute"
clustering:
  enabled: true
  signals:
    card: {{state: card, weight: 1.0}}
audit:
  enabled: true
  path: {path}
"""


async def test_state_the_policy_reads_is_logged_and_replayed(tmp_path: Path) -> None:
    # An auth layer in the same process puts account, plan and payment card in
    # scope["state"]; the log keeps them, so replay gets the same tiers and clusters.
    log = tmp_path / "audit.jsonl"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(STATEFUL.format(path=log))
    policy = compile_policy(parse_policy(policy_file.read_text()), str(policy_file))
    guard = HydraGuard(create_mock_app(), policy=policy, registry=CollectorRegistry())

    async def auth(scope, receive, send):  # type: ignore[no-untyped-def]
        user = dict(scope["headers"])[b"x-user"].decode()
        scope["state"] = {"user": user, "plan": "pro", "card": "card-1", "secret": object()}
        await guard(scope, receive, send)

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=auth), base_url="http://t"
    ) as client:
        statuses = [
            (
                await client.post("/v1/chat/completions", json=body, headers={"x-user": user})
            ).status_code
            for user in ("u1", "u1", "u1", "u2")
        ]
    await guard.aclose()
    assert statuses == [200, 200, 200, 200]  # pro: 3/minute
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["state"] == {
        "user": "u1",
        "plan": "pro",
        "card": "card-1",
    }  # only what it reads

    decisions = tmp_path / "decisions.jsonl"
    args = ["replay", str(log), "--policy", str(policy_file), "--decisions", str(decisions)]
    assert await asyncio.to_thread(main, args) == 0
    replayed = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [d["admitted"] for d in replayed] == [True, True, True, True]  # the pro tier again
    assert replayed[0]["cluster"] == replayed[3]["cluster"]  # u1 and u2 share the card
