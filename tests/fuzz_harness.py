"""The harness of the property-based tests of the request and response path (test_fuzz_*):
a policy with every dialect's route, a downstream app that records what it received and
answers what a test says, a fresh HydraGuard per example, and what it settled.

The suite runs a few examples, derandomized (the same every run, in CI too);
``HYDRAGUARD_FUZZ_EXAMPLES=N`` runs N random examples per property instead, and
``HYDRAGUARD_FUZZ_STORAGE=redis://...`` runs them on a Redis (flushed before each example).
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from hydraguard import HydraGuard
from hydraguard.policy.compiled import CompiledPolicy, compile_policy
from hydraguard.policy.loader import parse_policy
from hydraguard.record.audit import encode_line

_LONG_RUN = int(os.environ.get("HYDRAGUARD_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int) -> settings:
    """``examples`` derandomized examples, or the long run's number of random ones."""
    return settings(
        max_examples=_LONG_RUN or examples,
        derandomize=not _LONG_RUN,
        deadline=None,
        database=None,
        print_blob=True,
        # The tests take conftest's ``kit`` fixture: plain helper functions, no state.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


NOW = 1_800_000_005.0  # a fixed clock: one window holds every charge of an example
MAX_BYTES = 65_536
BATCH_MAX_BYTES = 200_000  # above inspect.body.OFF_LOOP_BYTES: parsed in a worker thread
MAX_OUTPUT = 100  # the tiers' max_output_tokens
CAP = 64  # the rewriting policy's cap_max_tokens
STRIPPED = ("logprobs", "top_logprobs", "logit_bias", "prompt_logprobs")

# Path -> (dialect, the envelope of its errors: "openai" | "anthropic").
ROUTES = {
    "/v1/chat/completions": ("openai-chat", "openai"),
    "/v1/completions": ("openai-chat", "openai"),
    "/v1/responses": ("openai-responses", "openai"),
    "/v1/messages": ("anthropic-messages", "anthropic"),
    "/v1/messages/batches": ("anthropic-batches", "anthropic"),
}
GENERIC = "/v1/embeddings"  # a generic route: its body goes through unread

_POLICY = """
name: fuzz
identity:
  account:
    - header: x-account-id
    - api_key: true
    - client_ip: true
  tier: {header: x-account-tier}
routes:
  - {path: /v1/chat/completions, dialect: openai-chat}
  - {path: /v1/completions, dialect: openai-chat}
  - {path: /v1/responses, dialect: openai-responses}
  - {path: /v1/messages, dialect: anthropic-messages}
  - {path: /v1/messages/batches, dialect: anthropic-batches, max_bytes: %(batch)d}
  - {path: /v1/embeddings, dialect: generic}
body: {max_bytes: %(body)d}
tiers:
  default:
    requests: 1000000/minute
    tokens: 1000000000/minute
    concurrency: 1000
    max_output_tokens: %(out)d
  single:
    requests: 1000000/minute
    tokens: 1000000000/minute
    concurrency: 1
    max_output_tokens: %(out)d
storage: {timeout: 5}
"""

# Every request is capped and stripped: the documented rewrites, on every route.
_REWRITING = """
anomaly:
  rules:
    - {name: cap, when: {risk_gte: 0}, action: cap_max_tokens, max_tokens: %(cap)d}
    - {name: strip, when: {risk_gte: 0}, action: strip, params: [%(strip)s]}
"""

# Every request is held a moment: a client may leave while it is held.
_DELAYING = """
anomaly:
  rules:
    - {name: hold, when: {risk_gte: 0}, action: delay, seconds: %s}
"""


# The context headers of DESIGN.md at work: an account id, a tier, linking signals and the
# client address, read from anyone or only from a trusted proxy (10.0.0.0/8).
_LINKING = """
name: fuzz-linking
identity:
  account:
    - header: x-account-id
    - api_key: true
    - client_ip: true
  tier: {header: x-account-tier}
  trusted_proxies: ["10.0.0.0/8"]
  context_headers_from: %(trust)s
routes:
  - {path: /v1/chat/completions, dialect: openai-chat}
tiers:
  default:
    requests: 1000000/minute
    tokens: 1000000000/minute
    concurrency: 1000
    max_output_tokens: %(out)d
  single:
    requests: 1000000/minute
    tokens: 1000000000/minute
    concurrency: 1
    max_output_tokens: %(out)d
clustering:
  enabled: true
  signals:
    org: {header: x-org-id, explicit: true}
    payment: {header: x-payment-fingerprint, weight: 1.0}
    device: {header: x-device-fingerprint, weight: 0.6}
    ja4: {header: x-ja4, weight: 0.2}
    subnet: {client_ip: {v4_prefix: 24}, weight: 0.3}
storage: {timeout: 5}
"""

# Held (delay) at most ``max_delayed`` at once, alone or with other actions: a cap on the
# held request, the hold in shadow (never held), a throttle that refuses before any hold.
HOLD_SECONDS = 0.05
_HOLD = "    - {name: hold, when: {risk_gte: 0}, action: delay, seconds: %s%s}\n"
_HOLDING_RULES = {
    "delay": _HOLD % (HOLD_SECONDS, ""),
    "delay+cap": _HOLD % (HOLD_SECONDS, "")
    + f"    - {{name: cap, when: {{risk_gte: 0}}, action: cap_max_tokens, max_tokens: {CAP}}}\n",
    "shadow delay": _HOLD % (HOLD_SECONDS, ", mode: shadow"),
    "delay+throttle": _HOLD % (HOLD_SECONDS, "")
    + "    - {name: squeeze, when: {risk_gte: 0}, action: throttle, factor: 0.000000001}\n",
}
HOLD_BOUNDS = (1, 2, 3)


def _compile(text: str) -> CompiledPolicy:
    return compile_policy(parse_policy(textwrap.dedent(text), "<fuzz>"), "<fuzz>")


_values = {"batch": BATCH_MAX_BYTES, "body": MAX_BYTES, "out": MAX_OUTPUT}
PLAIN = _compile(_POLICY % _values)
REWRITING = _compile(_POLICY % _values + _REWRITING % {"cap": CAP, "strip": ", ".join(STRIPPED)})
DELAYING = _compile(_POLICY % _values + _DELAYING % 0.05)
# Held a millisecond: listened to while held, a body not read yet (generic route) comes through.
BRIEFLY_HELD = _compile(_POLICY % _values + _DELAYING % 0.001)
HOLDING = {
    (variant, bound): _compile(
        _POLICY % _values + f"anomaly:\n  max_delayed: {bound}\n  rules:\n" + rules
    )
    for variant, rules in _HOLDING_RULES.items()
    for bound in HOLD_BOUNDS
}
LINKING = {
    trust: _compile(_LINKING % {"trust": trust, "out": MAX_OUTPUT})
    for trust in ("anyone", "trusted_proxies")
}


@dataclass
class Reply:
    """What the downstream app answers: status, headers and body chunks (one ASGI message
    each); ``fail_at``: raise before sending chunk i (-1: before the response starts);
    ``hang_at``: wait for ever before chunk i (the client leaves)."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [(b"content-type", b"application/json")]
    )
    chunks: list[bytes] = field(default_factory=lambda: [b'{"ok": true}'])
    fail_at: int | None = None
    hang_at: int | None = None


class AppFailed(Exception):
    pass


MARK = (b"x-downstream", b"1")  # on every answer of the app, never on HydraGuard's own


class Downstream:
    """The app behind HydraGuard: records each request it got, answers ``reply``."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply or Reply()
        self.received: list[tuple[dict[str, Any], bytes]] = []
        self.sent: list[bytes] = []  # the body chunks it handed to send
        self.hanging = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.received.append((scope, body))
        reply = self.reply
        await self._step(-1)
        headers = [*reply.headers, MARK]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        for index, chunk in enumerate(reply.chunks):
            await self._step(index)
            self.sent.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self._step(len(reply.chunks))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await self._step(len(reply.chunks) + 1)  # after the answer is complete

    async def _step(self, index: int) -> None:
        if self.reply.fail_at == index:
            raise AppFailed(index)
        if self.reply.hang_at == index:
            self.hanging.set()
            await asyncio.Event().wait()


class AuditLines:
    """Stands in for a Guard's audit log (AuditLog's arrive, write and skip): keeps each
    line as the log writes it, in memory, without a file and its writer thread."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.places = 0

    def arrive(self) -> int:
        self.places += 1
        return self.places - 1

    def write(self, record: Mapping[str, Any], place: int | None = None) -> bool:
        self.lines.append(encode_line(record, 1 << 20))
        return True

    def skip(self, place: int) -> None:
        pass


# The long run may use a Redis of its own (flushed before every example).
STORAGE = os.environ.get("HYDRAGUARD_FUZZ_STORAGE", "memory://")


def build(app: Any, policy: CompiledPolicy = PLAIN) -> HydraGuard:
    """A fresh HydraGuard (on STORAGE, with its own registry and a fixed clock)."""
    if STORAGE.startswith("redis"):
        client = redis.Redis.from_url(STORAGE)
        client.flushdb()
        client.close()
    return HydraGuard(
        app, policy=policy, storage=STORAGE, registry=CollectorRegistry(), clock=lambda: NOW
    )


def attach_settle_counter(guard: HydraGuard) -> list[int]:
    """Counts the Gate's settlements (a reservation is settled exactly once)."""
    gate = guard.guard.gate
    settle = gate.settle
    calls: list[int] = []

    def counted(decision: Any, used_tokens: int, now: float) -> None:
        calls.append(used_tokens)
        settle(decision, used_tokens, now)

    gate.settle = counted  # type: ignore[method-assign]
    return calls


def record_identities(guard: HydraGuard) -> list[Any]:
    """The Identity of each request the guard identifies, in order."""
    identifier = guard.guard.identifier
    identify = identifier.identify
    found: list[Any] = []

    def recorded(scope: Any, headers: dict[str, str]) -> Any:
        found.append(identify(scope, headers))
        return found[-1]

    identifier.identify = recorded  # type: ignore[method-assign]
    return found


async def usage_of(guard: HydraGuard, account: str, tier: str = "default") -> dict[str, float]:
    """The account's usage of its tier's tokens, requests and concurrency."""
    await guard.drain()
    plan = guard.guard.gate.planner.plan(account, tier, 0)
    values = await guard.storage.primary.usage(plan.checks, NOW)
    out: dict[str, float] = {}
    for limit, value in zip(plan.limits, values, strict=True):
        if limit.rule.startswith(f"tier.{tier}."):
            kind = limit.rule.split(".")[2]
            out[kind] = value
    return out


def settled_metric(guard: HydraGuard) -> float:
    """The tokens_settled counter, every route and source."""
    return sum(
        sample.value
        for metric in guard.metrics.tokens_settled.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def envelope_ok(kind: str, data: Any) -> bool:
    """Whether ``data`` is an error in the dialect's envelope ("openai" or "anthropic")."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return False
    error = data["error"]
    if kind == "openai":
        framed = set(data) == {"error"}
    else:
        framed = data.get("type") == "error"
    return framed and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


def run(coro_factory: Callable[[], Any]) -> Any:
    """Run one example on a fresh event loop."""
    return asyncio.run(coro_factory())
