"""Property: header names may come in any letter case (an ASGI server lower-cases them, but
HydraGuard may sit behind middleware that does not, or be called directly), a header may be
sent on several lines, and a value may hold any bytes. HTTP field names are case-insensitive
(RFC 9110, 5.1), and HydraGuard reads them so: a request is decided, linked, logged and
forwarded exactly as the same request with lower-case names. Its account, tier and linking
signals come from each header's first line, whatever its case (README); its audit line keeps
those values under lower-case names, and replaying the line finds the same tier and signals;
an API key is never kept raw (account, decision, signals, audit line, log messages); the
request is served, or refused in the dialect's envelope; it is settled once and its slot
released."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_harness import (
    LINKING,
    MARK,
    AuditLines,
    Downstream,
    attach_settle_counter,
    build,
    envelope_ok,
    fuzz_settings,
    run,
    usage_of,
)
from fuzz_requests import KEY_MARK, context_headers, recased
from hydraguard.cluster.config import PLACEHOLDERS
from hydraguard.cluster.signals import SignalExtractor
from hydraguard.identify import Identifier, bounded, hash_api_key

PATH = "/v1/chat/completions"
BODY = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
PROXIES = ipaddress.ip_network("10.0.0.0/8")  # the policy's trusted_proxies
PEERS = ["203.0.113.5", "10.0.0.1"]  # a client, a trusted proxy
TIERS = ("default", "single")
# What the audit line keeps: the context headers of DESIGN.md and the user agent.
AUDITED = ("x-account-id", "x-account-tier", "x-org-id", "x-payment-fingerprint",
           "x-device-fingerprint", "x-ja4", "user-agent")  # fmt: skip
SIGNALS = {
    "org": "x-org-id",
    "payment": "x-payment-fingerprint",
    "device": "x-device-fingerprint",
    "ja4": "x-ja4",
}
TOO_LARGE = b"999999999"  # a content-length past body.max_bytes: 413 before reading


@dataclass
class Seen:
    """What one request did: the answer, who it was, what was linked, logged and settled."""

    status: int
    served: bool
    answer: bytes
    identity: Any
    signals: list[dict[str, tuple[str, ...]]]
    decisions: list[tuple[str, str | None, bool, str | None]]  # account, cluster, admitted, rule
    decided: list[str]  # what each Decision keeps: storage keys, cluster, rule
    lines: list[bytes]  # audit lines
    logs: list[str]
    settled: list[int]
    usage: dict[str, float]
    forwarded: list[bytes]


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def decide(
    kit: SimpleNamespace, trust: str, headers: list[tuple[bytes, bytes]], peer: str
) -> Seen:
    app = Downstream()
    guard = build(app, LINKING[trust])
    inner = guard.guard
    audit = AuditLines()
    inner.audit = audit  # type: ignore[assignment]
    settled = attach_settle_counter(guard)
    identities: list[Any] = []
    identify = inner.identifier.identify

    def identified(scope: Any, decoded: dict[str, str]) -> Any:
        identities.append(identify(scope, decoded))
        return identities[-1]

    inner.identifier.identify = identified  # type: ignore[method-assign]
    assert inner.linker is not None
    linked: list[dict[str, tuple[str, ...]]] = []
    resolve = inner.linker.resolve

    async def resolved(account: str, signals: dict[str, tuple[str, ...]], now: float) -> Any:
        linked.append(signals)
        return await resolve(account, signals, now)

    inner.linker.resolve = resolved  # type: ignore[method-assign]
    decisions: list[tuple[str, str | None, bool, str | None]] = []
    whole: list[str] = []
    decide_ = inner.decide

    async def decided(*args: Any) -> Any:
        decision = await decide_(*args)
        decisions.append(
            (decision.identity.account, decision.cluster, decision.admitted, decision.rule)
        )
        # What is kept of it: storage keys, the decision's fields (Identity.headers holds
        # the request's headers, credentials too, in memory, and is never written).
        whole.append(repr((decision.plan, decision.cluster, decision.rule, decision.actions)))
        return decision

    inner.decide = decided  # type: ignore[method-assign]
    logs = _Logs()
    logger = logging.getLogger("hydraguard")
    level = logger.level
    logger.addHandler(logs)
    logger.setLevel(logging.DEBUG)
    try:
        scope = kit.http_scope(PATH, headers=headers, client=(peer, 4000))
        sent = await kit.call_asgi(guard, scope, BODY)
        [identity] = identities
        usage = await usage_of(guard, identity.account, identity.tier)
    finally:
        logger.removeHandler(logs)
        logger.setLevel(level)
        await guard.aclose()
    start, *rest = sent
    return Seen(
        start["status"],
        MARK in start["headers"],
        b"".join(m.get("body", b"") for m in rest),
        identity,
        linked,
        decisions,
        whole,
        audit.lines,
        logs.messages,
        settled,
        usage,
        [body for _, body in app.received],
    )


# --- what README and DESIGN.md say, written out independently ---------------------------


def first(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of the first line named ``name``, whatever its case."""
    for key, value in headers:
        if key.lower() == name.encode():
            return value.decode("latin-1")
    return None


def _proxy(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in PROXIES
    except ValueError:
        return False


def client_ip(headers: list[tuple[bytes, bytes]], peer: str) -> str:
    """The peer, or behind a trusted proxy the last x-forwarded-for hop (of all its lines,
    in order) that is not one of ours."""
    if not _proxy(peer):
        return peer
    lines = [v.decode("latin-1") for k, v in headers if k.lower() == b"x-forwarded-for"]
    hops = [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
    return next((hop for hop in reversed(hops) if not _proxy(hop)), hops[0] if hops else peer)


def trusted(trust: str, peer: str) -> bool:
    return trust == "anyone" or _proxy(peer)


def account_of(trust: str, headers: list[tuple[bytes, bytes]], peer: str) -> str:
    """The x-account-id (context), else the hashed Bearer token or x-api-key, else the client
    address; past 256 characters, ``long-`` and a hash."""
    declared = first(headers, "x-account-id") if trusted(trust, peer) else None
    if declared:
        return bounded(declared)
    auth = first(headers, "authorization") or ""
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return hash_api_key(auth[7:].strip())
    key = first(headers, "x-api-key")
    if key:
        return hash_api_key(key)
    return bounded("ip-" + client_ip(headers, peer))


def tier_of(trust: str, headers: list[tuple[bytes, bytes]], peer: str) -> str:
    tier = first(headers, "x-account-tier") if trusted(trust, peer) else None
    return tier if tier in TIERS else "default"


def header_signals(trust: str, headers: list[tuple[bytes, bytes]], peer: str) -> dict[str, Any]:
    """The header signals: first line, trimmed; empty and placeholder values are no evidence."""
    found = {}
    for signal, name in SIGNALS.items():
        value = first(headers, name) if trusted(trust, peer) else None
        value = value.strip() if value is not None else ""
        if value and value.lower() not in PLACEHOLDERS:
            found[signal] = (bounded(value),)
    return found


def audited(trust: str, headers: list[tuple[bytes, bytes]], peer: str) -> dict[str, str]:
    if not trusted(trust, peer):
        return {}
    return {name: value for name in AUDITED if (value := first(headers, name)) is not None}


# --- the property -----------------------------------------------------------------------


def keys_in(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The API keys the request carries, as they could be kept: whole and trimmed."""
    found = []
    for _, value in headers:
        at = value.find(KEY_MARK)
        if at >= 0:
            key = value[at:].split()[0].decode("latin-1")
            found.append(key)
    return found


async def example(
    kit: SimpleNamespace, trust: str, headers: list[tuple[bytes, bytes]], peer: str
) -> None:
    seen = await decide(kit, trust, headers, peer)
    plain = [(name.lower(), value) for name, value in headers]
    lower = await decide(kit, trust, plain, peer)
    # Read alike whatever the case of the names: decided, linked, logged, forwarded alike.
    for field in ("status", "served", "answer", "identity", "signals", "decisions", "lines"):
        assert getattr(seen, field) == getattr(lower, field), field
    assert (seen.settled, seen.usage, seen.forwarded) == (
        lower.settled,
        lower.usage,
        lower.forwarded,
    )

    identity = seen.identity
    assert identity.account == account_of(trust, headers, peer)
    assert identity.tier == tier_of(trust, headers, peer)
    assert identity.client_ip == client_ip(headers, peer)
    lines = [line.decode() for line in seen.lines]
    kept = "\n".join([identity.account, repr(seen.signals), *seen.decided, *lines, *seen.logs])
    for key in keys_in(headers):
        assert key not in kept
    assert seen.usage["concurrency"] == 0

    declared = first(headers, "content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > 10**6:
        event("413 declared too large")
        assert (
            seen.status == 413
            and not seen.served
            and envelope_ok("openai", orjson.loads(seen.answer))
        )
        assert seen.decisions == seen.lines == seen.settled == [] and seen.forwarded == []
        return
    event(f"served, {'trusted' if trusted(trust, peer) else 'untrusted'} context")
    assert seen.status == 200 and seen.served and seen.forwarded == [BODY], seen.answer[:300]
    assert len(seen.settled) == 1 and seen.usage["requests"] == 1
    assert seen.usage["tokens"] == seen.settled[0]
    [signals] = seen.signals
    assert {k: v for k, v in signals.items() if k in SIGNALS} == header_signals(
        trust, headers, peer
    )
    # The audit line: the account and client address decided, the first line of each kept
    # header under its lower-case name; its replay reads the same tier and signals.
    [line] = seen.lines
    record = orjson.loads(line)
    assert record["account"] == identity.account and record["ip"] == identity.client_ip
    assert record["headers"] == audited(trust, headers, peer)
    policy = LINKING[trust]
    assert Identifier(policy).tier_for(record["headers"], {}) == identity.tier
    replayed = SignalExtractor(policy.clustering).extract(record["headers"], {}, record["ip"], None)
    assert replayed == signals


# Content-length, in any case too: declared too large, the request is refused before a byte.
lengths = st.tuples(recased(b"content-length"), st.sampled_from([b"80", TOO_LARGE]))


@fuzz_settings(60)
@given(
    headers=context_headers,
    length=st.lists(lengths, max_size=1),
    where=st.integers(0, 8),
    trust=st.sampled_from(["anyone", "trusted_proxies"]),
    peer=st.sampled_from(PEERS),
)
def test_header_names_in_any_case_are_read_alike_everywhere(
    kit: SimpleNamespace,
    headers: list[tuple[bytes, bytes]],
    length: list[tuple[bytes, bytes]],
    where: int,
    trust: str,
    peer: str,
) -> None:
    headers = headers[:where] + length + headers[where:]
    run(lambda: example(kit, trust, headers, peer))
