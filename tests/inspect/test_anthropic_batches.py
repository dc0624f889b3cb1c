"""The Anthropic Message Batches dialect: every entry read and added up, caps and strips on
every entry, settlement by reservation; and end to end through the middleware, in front of
an upstream that answers with the batch object (no usage), as Anthropic does."""

from __future__ import annotations

import json
import math
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hydraguard.assess.config import Detectors
from hydraguard.inspect.anthropic_batches import SAMPLE
from hydraguard.inspect.body import OFF_LOOP_BYTES
from hydraguard.inspect.dialects import DIALECTS, dialect_for_path
from hydraguard.inspect.facts import capped_max_tokens, estimate_input_tokens
from hydraguard.inspect.rewrite import rewrite_request
from hydraguard.middleware import HydraGuard
from hydraguard.observe.usage import usage_reported_later

BATCHES = DIALECTS["anthropic-batches"]
MESSAGES = DIALECTS["anthropic-messages"]


def entry(text: str, max_tokens: Any = 100, **params: Any) -> dict[str, Any]:
    params = {"model": "claude", "messages": [{"role": "user", "content": text}], **params}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return {"custom_id": text[:8], "params": params}


def batch(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"requests": list(entries)}


# --- reading a batch ---------------------------------------------------------------------


def test_every_entry_counts_in_the_estimate_and_max_tokens_is_their_sum() -> None:
    body = batch(
        entry("Explain step by step: 1+1", 300, system="Be terse.", temperature=0.2),
        entry("Explain step by step: 2+2", "200"),  # as a lax upstream reads it
        entry("no max_tokens: the upstream rejects this entry", None),
        entry(
            "with a tool result",
            50,
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": [{"type": "tool_result", "content": "42 " * 10}]},
            ],
        ),
    )
    facts = BATCHES.parse(body)
    singles = [MESSAGES.parse(e["params"]) for e in body["requests"]]
    # Detectors read the first entry only; the others are counted, not read.
    assert facts.prompt == singles[0].prompt == "Be terse.\nExplain step by step: 1+1"
    chars = sum(len(s.prompt) + s.extra_chars for s in singles)
    assert len(facts.prompt) + facts.extra_chars == chars
    assert facts.messages == sum(s.messages for s in singles) == 6
    assert estimate_input_tokens(facts, 4, 4) == math.ceil(chars / 4) + 4 * 6
    assert facts.max_tokens == 300 + 200 + 0 + 50
    assert facts.entry_max_tokens == (300, 200, 0, 50)
    assert (facts.n, facts.stream, facts.logprobs) == (1, False, False)
    assert (facts.model, facts.temperature) == ("claude", 0.2)


@pytest.mark.parametrize(
    "body",
    [{}, {"requests": "x"}, {"requests": []}, {"requests": [1, {"params": "x"}, {"id": 2}]}],
    ids=["no-requests", "not-a-list", "empty", "no-params"],
)
def test_a_batch_without_readable_entries_reserves_no_output(body: dict[str, Any]) -> None:
    # The upstream rejects it: nothing runs, so only the (minimal) input estimate is held.
    facts = BATCHES.parse(body)
    assert (facts.prompt, facts.messages, facts.max_tokens, facts.entry_max_tokens) == (
        "",
        0,
        0,
        (),
    )
    assert estimate_input_tokens(facts, 4, 4) == 1


def test_a_cap_rewrites_every_entry_that_says_max_tokens_and_matches_the_reservation() -> None:
    body = batch(entry("a", 5000), entry("b", "300"), entry("c", 2000.0), entry("d", None))
    facts = BATCHES.parse(json.loads(json.dumps(body)))
    raw = json.dumps(body).encode()
    new_body, scope = rewrite_request(
        BATCHES, facts, raw, {"headers": [(b"content-length", b"1")]}, stream_usage=True, cap=1024
    )
    sent = [e["params"].get("max_tokens") for e in json.loads(new_body)["requests"]]
    # The entry without one stays without one: given the cap it would run unreserved.
    assert sent == [1024, "300", 1024, None]
    assert capped_max_tokens(facts, 1024, 4096) == 1024 + 300 + 1024 + 0
    assert dict(scope["headers"])[b"content-length"] == str(len(new_body)).encode()


def test_the_cap_hook_keeps_single_request_behaviour() -> None:
    # A request without max_tokens gets the cap (or the tier's ceiling when lower).
    facts = MESSAGES.parse({"messages": [{"role": "user", "content": "x"}]})
    capped, _ = rewrite_request(MESSAGES, facts, b"{}", {"headers": []}, stream_usage=True, cap=9)
    assert json.loads(capped)["max_tokens"] == 9
    assert capped_max_tokens(facts, 9, 4096) == 9
    assert capped_max_tokens(facts, 9, 5) == 5
    # A limit under the cap, in a spelling the upstream reads, is not raised to the cap.
    body = {"messages": [], "max_tokens": "300"}
    facts = MESSAGES.parse(dict(body))
    same, _ = rewrite_request(
        MESSAGES, facts, b"kept", {"headers": []}, stream_usage=True, cap=1024
    )
    assert same == b"kept" and capped_max_tokens(facts, 1024, 4096) == 300


def test_strip_applies_to_every_entry() -> None:
    body = batch(entry("a", 10, top_k=5), entry("b", 10), entry("c", 10, top_k=1))
    facts = BATCHES.parse(body)
    new_body, _ = rewrite_request(
        BATCHES, facts, b"", {"headers": []}, stream_usage=True, strip=("top_k",)
    )
    assert all("top_k" not in e["params"] for e in json.loads(new_body)["requests"])


def test_the_batch_object_is_no_usage_and_errors_are_anthropics() -> None:
    # A batch object whose entries reported usage still is not this request's bill.
    assert BATCHES.usage({"type": "message_batch", "usage": {"input_tokens": 1, "output_tokens": 1}}) is None  # fmt: skip
    content_type, body = BATCHES.error_body(429, "slow down", "rate_limit_exceeded", {})
    assert content_type == b"application/json"
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    assert dialect_for_path("/v1/messages/batches") is BATCHES
    assert dialect_for_path("/v1/messages") is MESSAGES


@pytest.mark.parametrize(
    ("status", "charged"),
    [
        (200, (30, 500)),
        (201, (30, 500)),
        (302, (30, 0)),
        (400, (30, 0)),
        (529, (30, 0)),
        (499, (30, 0)),
        (0, (30, 0)),
    ],
)
def test_a_created_batch_keeps_its_reservation_a_failed_one_its_input(
    status: int, charged: tuple[int, int]
) -> None:
    assert usage_reported_later(status, 30, 500) == charged


# --- end to end ---------------------------------------------------------------------------

POLICY = {
    "name": "batches",
    "identity": {"account": [{"header": "x-account-id"}]},
    "routes": [
        {"path": "/v1/chat/completions", "dialect": "openai-chat"},
        {"path": "/v1/messages/batches", "dialect": "anthropic-batches", "max_bytes": 65536},
    ],
    "body": {"max_bytes": 4096},
    "tiers": {
        "default": {
            "requests": "1000/minute",
            "tokens": "100000/minute",
            "concurrency": 10,
            "max_output_tokens": 4096,
        }
    },
}
TOKENS = "tier.default.tokens.100000/minute"
REQUESTS = "tier.default.requests.1000/minute"
SLOTS = "tier.default.concurrency"
BATCH_OBJECT = {"id": "msgbatch_1", "type": "message_batch", "processing_status": "in_progress",
                "request_counts": {"processing": 3, "succeeded": 0, "errored": 0}}  # fmt: skip


def batch_upstream(seen: list[bytes], status: int = 200) -> Starlette:
    """Anthropic's batch endpoints: creation answers with the batch object, listing with a page."""

    async def create(request: Request) -> Response:
        seen.append(await request.body())
        if status >= 400:
            return JSONResponse({"type": "error", "error": {"type": "x", "message": "no"}}, status)
        return JSONResponse(BATCH_OBJECT, status)

    async def listing(request: Request) -> Response:
        return JSONResponse({"data": [BATCH_OBJECT], "has_more": False})

    async def chat(request: Request) -> Response:
        seen.append(await request.body())
        return JSONResponse({"usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    return Starlette(
        routes=[
            Route("/v1/messages/batches", create, methods=["POST"]),
            Route("/v1/messages/batches", listing, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def three_entries() -> dict[str, Any]:
    return batch(entry("Solve: 12*7", 800), entry("Solve: 9*9", 1200), entry("Solve: 3^4", 500))


async def post(g: Any, body: Any, account: str = "a", path: str = "/v1/messages/batches") -> Any:
    return await g.client.post(path, json=body, headers={"x-account-id": account})


async def test_a_created_batch_is_charged_its_whole_reservation(
    guarded: Any, kit: SimpleNamespace
) -> None:
    seen: list[bytes] = []
    g = await guarded(batch_upstream(seen), yaml.safe_dump(POLICY))
    body = three_entries()
    reply = await post(g, body)
    assert reply.status_code == 200 and reply.json() == BATCH_OBJECT
    assert json.loads(seen[0]) == body
    estimate = estimate_input_tokens(BATCHES.parse(body), 4, 4)
    usage = await g.usage("a")
    # Not the body's size / 4 (the rule for a success without usage): every entry's output.
    assert usage[TOKENS] == estimate + 800 + 1200 + 500
    assert usage[SLOTS] == 0
    settled = g.registry.get_sample_value(
        "hydraguard_tokens_settled_total",
        {"policy": "batches", "route": "/v1/messages/batches", "source": "estimate"},
    )
    assert settled == estimate + 2500


async def test_a_refused_batch_creation_is_charged_its_input_only(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(batch_upstream([], status=400), yaml.safe_dump(POLICY))
    body = three_entries()
    assert (await post(g, body)).status_code == 400
    assert (await g.usage("a"))[TOKENS] == estimate_input_tokens(BATCHES.parse(body), 4, 4)


async def test_a_batch_larger_than_the_token_quota_is_refused_before_the_upstream(
    guarded: Any, kit: SimpleNamespace
) -> None:
    seen: list[bytes] = []
    g = await guarded(batch_upstream(seen), yaml.safe_dump(POLICY))
    # 30 entries of 4000 tokens: 120,000 > 100,000/minute, though each alone would fit.
    reply = await post(g, batch(*(entry(f"q{i}", 4000) for i in range(30))))
    assert reply.status_code == 429 and not seen
    error = reply.json()
    assert (error["type"], error["error"]["type"]) == ("error", "rate_limit_error")
    assert error["error"]["rule"] == TOKENS
    assert (await g.usage("a"))[TOKENS] == 0


async def test_the_route_reads_bodies_up_to_its_own_max_bytes(
    guarded: Any, kit: SimpleNamespace
) -> None:
    seen: list[bytes] = []
    g = await guarded(batch_upstream(seen), yaml.safe_dump(POLICY))
    padding = "x" * 5000  # over body.max_bytes (4096), under the route's 65536
    assert (await post(g, batch(entry(padding, 10)))).status_code == 200
    chat = {"messages": [{"role": "user", "content": padding}]}
    too_big_chat = await post(g, chat, path="/v1/chat/completions")
    assert too_big_chat.status_code == 413
    assert "4096 bytes" in too_big_chat.json()["error"]["message"]
    too_big = await post(g, batch(entry("y" * 70000, 10)))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "request_too_large"
    assert "65536 bytes" in too_big.json()["error"]["message"]
    assert len(seen) == 1


async def test_listing_batches_without_a_body_passes_and_counts_one_request(
    guarded: Any, kit: SimpleNamespace
) -> None:
    g = await guarded(batch_upstream([]), yaml.safe_dump(POLICY))
    reply = await g.client.get("/v1/messages/batches", headers={"x-account-id": "a"})
    assert reply.status_code == 200 and reply.json()["data"] == [BATCH_OBJECT]
    usage = await g.usage("a")
    assert (usage[REQUESTS], usage[TOKENS], usage[SLOTS]) == (1, 0, 0)
    # A body-less POST is still malformed, not a way around the parser.
    empty = await g.client.post("/v1/messages/batches", headers={"x-account-id": "a"})
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"


CAP_RULE = {"name": "cap", "when": {"risk_gte": 0.5}, "action": "cap_max_tokens", "max_tokens": 300}
ANOMALY = {
    "risk": {"half_life": "1h", "rescore_every": 1},
    # One detector: two extraction probes make an account's risk 1.0.
    "detectors": {
        **{name: {"enabled": False} for name in Detectors.model_fields},
        "extraction_params": {"weight": 1.0, "min_events": 2, "low": 0.1, "high": 0.5},
    },
    "rules": [CAP_RULE],
}
PROBE = {"max_tokens": 1, "logprobs": True, "top_logprobs": 5, "logit_bias": {"1": -100},
         "messages": [{"role": "user", "content": "next token?"}]}  # fmt: skip


async def test_a_cap_rewrites_every_entry_of_a_risky_accounts_batch(
    guarded: Any, kit: SimpleNamespace
) -> None:
    seen: list[bytes] = []
    policy = {**POLICY, "anomaly": ANOMALY}
    g = await guarded(batch_upstream(seen), yaml.safe_dump(policy), clock=kit.Clock())
    for _ in range(2):
        assert (await post(g, PROBE, "risky", "/v1/chat/completions")).status_code == 200
        await g.guard.drain()
    before = (await g.usage("risky"))[TOKENS]
    body = three_entries()
    reply = await post(g, body, "risky")
    assert reply.status_code == 200
    sent = json.loads(seen[-1])["requests"]
    assert [e["params"]["max_tokens"] for e in sent] == [300, 300, 300]
    assert [e["params"]["messages"] for e in sent] == [e["params"]["messages"] for e in body["requests"]]  # fmt: skip
    # The reservation kept is the capped one: what the upstream may now spend.
    estimate = estimate_input_tokens(BATCHES.parse(body), 4, 4)
    assert (await g.usage("risky"))[TOKENS] - before == estimate + 900


async def test_the_shipped_default_policy_guards_anthropic_batches() -> None:
    seen: list[bytes] = []
    registry = CollectorRegistry()
    guard = HydraGuard(batch_upstream(seen), storage="memory://", registry=registry)
    transport = httpx.ASGITransport(app=guard)
    # 1.2 MB: over body.max_bytes, well under the route's cap; 300k tokens fit pro's quota.
    body = batch(*(entry("z" * 12_000, 100) for i in range(100)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        headers = {"x-account-id": "d", "x-account-tier": "pro"}
        reply = await client.post("/v1/messages/batches", json=body, headers=headers)
    await guard.aclose()
    assert reply.status_code == 200 and len(seen) == 1
    settled = registry.get_sample_value(
        "hydraguard_tokens_settled_total",
        {"policy": "default", "route": "/v1/messages/batches", "source": "estimate"},
    )
    assert settled == estimate_input_tokens(BATCHES.parse(body), 4, 4) + 100 * 100


# --- what the detectors read of a batch ---------------------------------------------------


def test_the_detectors_read_a_drawn_sample_of_a_large_batch_in_batch_order() -> None:
    body = batch(*(entry(f"Question {i}: what is {i} squared?", 100 + i) for i in range(400)))
    facts = BATCHES.parse(body)
    drawn = [int(e.prompt.split()[1].rstrip(":")) for e in facts.entries]
    assert len(drawn) == SAMPLE and drawn == sorted(set(drawn))
    assert [e.max_tokens for e in facts.entries] == [100 + i for i in drawn]
    # Spread over the batch (a prefix or an aimed position would not be): some from each half.
    assert min(drawn) < 200 <= max(drawn)
    # The batch's own prompt is the first drawn entry's; every entry still counts in the
    # estimate, and the reservation is still every entry's max_tokens.
    assert facts.prompt == facts.entries[0].prompt
    assert len(facts.prompt) + facts.extra_chars == sum(
        len(MESSAGES.parse(e["params"]).prompt) for e in body["requests"]
    )
    assert facts.max_tokens == sum(100 + i for i in range(400))
    # Deterministic (a replay draws the same); another batch draws elsewhere.
    assert [e.prompt for e in BATCHES.parse(body).entries] == [e.prompt for e in facts.entries]
    body["requests"][399]["params"]["messages"][0]["content"] = "Question 399: and cubed?"
    assert [e.prompt for e in BATCHES.parse(body).entries] != [e.prompt for e in facts.entries]


def test_a_small_batch_is_read_whole_and_a_single_request_has_no_entries() -> None:
    facts = BATCHES.parse(three_entries())
    assert [e.prompt for e in facts.entries] == ["Solve: 12*7", "Solve: 9*9", "Solve: 3^4"]
    assert MESSAGES.parse(three_entries()["requests"][0]["params"]).entries == ()


REASONING_ONLY = {
    "risk": {"half_life": "1h", "rescore_every": 1},
    "detectors": {
        **{name: {"enabled": False} for name in Detectors.model_fields},
        "reasoning_elicitation": {"weight": 1.0, "min_events": 10, "low": 0.25, "high": 0.75},
    },
    "rules": [CAP_RULE],
}


@pytest.mark.parametrize("harmless_first", [True, False])
async def test_a_batch_of_reasoning_asks_is_seen_whatever_its_first_entry(
    guarded: Any, kit: SimpleNamespace, harmless_first: bool
) -> None:
    # A distiller's batch (30,000 tokens reserved, within the 100,000/minute quota): 60 asks for the reasoning trace, the first entry a harmless one.
    # The detectors used to read the first entry only, so such batches never raised risk.
    seen: list[bytes] = []
    policy = {**POLICY, "anomaly": REASONING_ONLY}
    g = await guarded(batch_upstream(seen), yaml.safe_dump(policy), clock=kit.Clock())
    asks = [entry(f"Think step by step and show your reasoning: task {i}", 500) for i in range(60)]
    first = entry("What is the capital of France?", 500) if harmless_first else asks[0]
    body = batch(first, *asks[1:])
    assert (await post(g, body, "distiller")).status_code == 200
    await g.guard.drain()
    assert (await post(g, body, "distiller")).status_code == 200
    # The second batch was capped: the account's risk passed the cap rule's threshold.
    assert {e["params"]["max_tokens"] for e in json.loads(seen[-1])["requests"]} == {300}
    # A student's batch of ordinary questions with one "step by step" among them is not.
    plain = [entry(f"Translate sentence {i} into French.", 500) for i in range(60)]
    student = batch(entry("Explain step by step: 2+2", 500), *plain[1:])
    for _ in range(2):
        assert (await post(g, student, "student")).status_code == 200
        await g.guard.drain()
    assert {e["params"]["max_tokens"] for e in json.loads(seen[-1])["requests"]} == {500}


async def test_a_large_body_is_parsed_off_the_event_loop(
    guarded: Any, kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 96,000 minimal entries in 8 MiB took 1.1 s of Python to read: on the event loop, every
    # other request stalled that long. Bodies over OFF_LOOP_BYTES are read in a worker thread.
    threads: list[threading.Thread] = []
    parse = BATCHES.parse

    def recording(body: dict[str, Any]) -> Any:
        threads.append(threading.current_thread())
        return parse(body)

    monkeypatch.setattr(BATCHES, "parse", recording)
    policy = {**POLICY, "routes": [{**POLICY["routes"][1], "max_bytes": 1 << 20}]}
    g = await guarded(batch_upstream([]), yaml.safe_dump(policy))
    small = three_entries()
    large = batch(*(entry(f"Solve: {i} + {i}", 1) for i in range(4000)))
    assert len(json.dumps(small)) < OFF_LOOP_BYTES < len(json.dumps(large))
    assert (await post(g, small)).status_code == 200
    assert (await post(g, large)).status_code == 200
    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()
    # Read the same either way: all 4,000 entries reserved, a malformed body still a 400.
    assert (await g.usage("a"))[TOKENS] >= 4000 + 3
    broken = await g.client.post(
        "/v1/messages/batches",
        content=b"[" * (OFF_LOOP_BYTES + 1),
        headers={"x-account-id": "a", "content-type": "application/json"},
    )
    assert broken.status_code == 400
