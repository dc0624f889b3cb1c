"""One compiled policy at work: the flow of a request from identify to record.

A policy reload builds a new Guard and swaps it in whole; requests already running
finish on the Guard they started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admit.gate import Decision, Gate
from .admit.headers import policy_header, ratelimit_headers, with_ratelimit_headers
from .admit.plan import BLOCK_SUFFIX, account_prefix, cluster_prefix
from .assess.effects import NONE as NO_EFFECTS
from .assess.effects import Effects, effects_of
from .assess.learning import Learning
from .assess.risk import RiskEngine
from .assess.sharing import RiskSharing
from .cluster.linker import Linker
from .identify import Identifier, Identity, decode_headers
from .inspect.body import (
    READING_METHODS,
    BodyTooLarge,
    ClientGone,
    NotJSONObject,
    hold_listening,
    read_body,
    read_facts,
    replay_receive,
)
from .inspect.dialect import Dialect
from .inspect.dialects import DIALECTS
from .inspect.facts import RequestFacts, capped_max_tokens
from .inspect.rewrite import Unwritable, rewrite_request
from .metrics import Metrics
from .observe.encodings import readable_accept_encoding
from .observe.usage import UsageReader, usage_reported_later
from .policy.compiled import CompiledPolicy, CompiledRoute
from .record.audit import AuditLog, audit_record
from .record.headers import audit_headers, audit_state_keys
from .respond import send_error, send_refusal
from .storage.resilient import ResilientStorage

log = logging.getLogger("hydraguard")


# The metrics' reason for each error code of a refused body (bounded label values).
_INVALID_REASONS = {
    "request_too_large": "body_too_large",
    "invalid_json": "malformed_json",
    "body_too_deep": "body_too_deep",
}


# A delayed request: held for its delay, refused (as many held as anomaly.max_delayed), or
# let go because its client left while it was held.
HoldOutcome = Literal["held", "full", "gone"]


@dataclass(slots=True)
class _Note:
    """What a request's audit line needs from its arrival, and its place in the log."""

    method: str
    path: str
    body: bytes
    ts: float
    place: int
    written: bool = False


class Guard:
    def __init__(
        self,
        policy: CompiledPolicy,
        storage: ResilientStorage,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        linker: Linker | None = None,
        risk: RiskEngine | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.policy = policy
        self.storage = storage
        self.gate = Gate(policy, storage)
        self.linker = linker
        self.risk = risk
        self.learning = Learning(policy, linker, risk)
        # Several replicas on shared storage: each one's risk scores reach the others.
        self.sharing: RiskSharing | None = None
        if risk is not None and policy.anomaly.share_risk and storage.primary.shared:
            self.sharing = RiskSharing(
                risk,
                storage.primary,
                metrics.storage_errors.labels("risk").inc,
                storage.available,
            )
            self.learning.sharing = self.sharing
        growth = policy.cluster_growth
        self._growth = (growth.per_member, growth.max_factor)
        self.max_held = policy.anomaly.max_delayed
        self.audit = audit
        self.audit_headers = audit_headers(policy)
        self.audit_state_keys = audit_state_keys(policy)
        self._held = 0
        self.identifier = Identifier(policy)
        self.metrics = metrics
        self.clock = clock
        self.decision_seconds = metrics.decision_seconds.labels(policy.name)
        self.in_flight = metrics.in_flight.labels(policy.name)
        self._route_children: dict[str, tuple[Any, Any, Any]] = {}
        # RateLimit-Policy is the same for every request of a tier: build it once.
        self.policy_headers = {
            tier: (b"ratelimit-policy", policy_header(self.gate.planner.plan("x", tier, 0).limits))
            for tier in policy.tiers
        }
        for rule in policy.rules:
            for route in (*policy.routes.exact.values(), *(r for _, r in policy.routes.prefixes)):
                metrics.decisions.labels(policy.name, route.name, "deny", rule)

    async def handle(
        self,
        route: CompiledRoute,
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: ASGIApp,
    ) -> None:
        started = time.perf_counter()
        policy = self.policy
        dialect = DIALECTS[route.dialect]
        headers = decode_headers(scope["headers"])
        identity = self.identifier.identify(scope, headers)
        facts: RequestFacts | None = None
        body = b""
        if dialect.reads_body:
            try:
                body = await read_body(receive, route.max_bytes, headers.get("content-length"))
            except ClientGone:
                return
            except BodyTooLarge:
                message = f"Request body exceeds {route.max_bytes} bytes."
                await self._invalid(route, dialect, send, 413, message, "request_too_large")
                return
            try:
                facts = await read_facts(dialect, body)
            except NotJSONObject as exc:
                if body or scope["method"] not in READING_METHODS:
                    message = f"Request body is not a JSON object: {exc}"
                    await self._invalid(route, dialect, send, 400, message, "invalid_json")
                    return
                receive = replay_receive(body, receive)  # counted in requests, like generic
        now = self.clock()
        # The request's place in the audit log is taken as it arrives (the log is in arrival
        # order); a request that ends without writing its line gives the place up.
        note = (
            _Note(scope["method"], path, body, now, self.audit.arrive())
            if self.audit is not None
            else None
        )
        try:
            decision = await self.decide(identity, facts, now)
            self.decision_seconds.observe(time.perf_counter() - started)
            layout = decision.plan.layout
            extra = ratelimit_headers(
                layout.limits,
                layout.report_groups,
                decision.plan.checks,
                decision.verdict,
                dialect.openai_headers,
            )
            extra.append(self.policy_headers[identity.tier])
            if not decision.admitted:
                await self._refuse(route, dialect, decision, extra, send)
                if note is not None:
                    self._audit(
                        note, identity, 429 if decision.degraded != "storage_closed" else 503, None
                    )
                return
            if facts is not None:
                if "accept-encoding" in headers:  # usage must stay readable
                    scope = readable_accept_encoding(scope)
                try:
                    body, scope = rewrite_request(
                        dialect,
                        facts,
                        body,
                        scope,
                        stream_usage=policy.stream_usage,
                        cap=decision.output_cap,
                        strip=decision.strip,
                    )
                except Unwritable as exc:  # nothing is served: its tokens and slots go back
                    self.gate.settle(decision, 0, self.clock())
                    message = f"Request body is nested too deeply to be rewritten ({exc})."
                    await self._invalid(route, dialect, send, 400, message, "body_too_deep")
                    if note is not None:
                        self._audit(note, identity, 400, None)
                    return
            if decision.delay:
                held, receive = await self._hold_or_refund(decision, receive)
                if held == "gone":  # the client left while held: nobody to answer
                    return
                if held == "full":
                    await self._refuse_held(route, dialect, decision, extra, send)
                    if note is not None:
                        self._audit(note, identity, 429, None)
                    return
            if facts is not None:  # after the hold, which listens to the client itself
                receive = replay_receive(body, receive)
            outcome = "shadow_deny" if decision.shadow_denied else (decision.degraded or "allow")
            self.metrics.decision(policy.name, route.name, outcome, decision.rule)
            if decision.actions or decision.shadow_actions:
                self._count_actions(decision)
            if facts is not None:
                self._route_metrics(route)[0].inc(
                    decision.input_estimate + decision.output_reserved
                )
            await self._forward(
                route, dialect, decision, facts, extra, scope, receive, send, app, note
            )
        finally:
            if note is not None and not note.written and self.audit is not None:
                self.audit.skip(note.place)

    async def decide(self, identity: Identity, facts: RequestFacts | None, now: float) -> Decision:
        """identify is done; cluster, assess and admit. The live path and replay share it."""
        cluster, size = None, 1
        if self.linker is not None:
            signals = self.linker.signals(identity.headers, identity.state, identity.client_ip)
            cluster, size = await self.linker.resolve(identity.account, signals, now)
            if self.linker.merges:
                await self._carry_merges(self.linker.take_merges(), identity.tier, now)
        effects = NO_EFFECTS
        risk = 0.0
        if self.risk is not None:
            # A lone account's cluster is the account itself: one subject, not two.
            subject_cluster = cluster if size > 1 else None
            if self.sharing is not None:
                self.sharing.refresh(identity.account, subject_cluster, now)
            assessment = self.risk.assess(identity.account, subject_cluster, now)
            risk = assessment.risk
            effects = effects_of(assessment)
            if effects is not NO_EFFECTS:
                await self._apply(identity, facts, effects, now)
        per_member, max_factor = self._growth
        growth = min(max_factor, 1.0 + per_member * (size - 1)) if per_member else 1.0
        decision = await self.gate.admit(
            identity, facts, now, cluster, effects.factor, growth * effects.factor
        )
        decision.risk = risk
        decision.cluster_size = size
        if effects is not NO_EFFECTS:
            decision.detectors = assessment.top_detectors
            decision.shadow_actions = effects.shadow
            decision.actions = effects.applied
            decision.output_cap = effects.cap
            decision.strip = effects.strip
            decision.delay = effects.delay
            decision.action_rules = effects.by_rule
            if effects.applied and (
                effects.block or (decision.admitted and not decision.shadow_denied)
            ):
                decision.rule = effects.rule
        return decision

    async def _apply(
        self, identity: Identity, facts: RequestFacts | None, effects: Effects, now: float
    ) -> None:
        if effects.block:
            # A flag in storage, so every replica refuses the account for the duration.
            try:
                async with asyncio.timeout(self.storage.timeout):
                    await self.storage.primary.set_flag(
                        account_prefix(identity.account) + BLOCK_SUFFIX, effects.block, now
                    )
            except Exception as exc:  # storage down: admission then follows storage.on_error
                self.metrics.storage_errors.labels("block").inc()
                log.warning("hydraguard: could not store a block: %r", exc)
        if effects.cap is not None and facts is not None:
            ceiling = self.policy.tiers[identity.tier].max_output_tokens
            facts.max_tokens = capped_max_tokens(facts, effects.cap, ceiling)

    async def _hold_or_refund(
        self, decision: Decision, receive: Receive
    ) -> tuple[HoldOutcome, Receive]:
        """Hold a delayed request: "held", or "full" (refused after all) or "gone" (the client
        left while held), which refund its tokens and release its concurrency slots, as does
        a cancellation; with the receive the app reads from."""
        try:
            held, receive = await self._hold(decision, receive)
        except BaseException:
            self.gate.settle(decision, 0, self.clock())
            raise
        if held != "held":
            self.gate.settle(decision, 0, self.clock())
        return held, receive

    async def _hold(self, decision: Decision, receive: Receive) -> tuple[HoldOutcome, Receive]:
        """The delay action: hold the request without blocking the loop, a bounded number at
        once, listening for the client's leaving meanwhile."""
        if self._held >= self.max_held:
            return "full", receive
        self._held += 1
        try:
            after = await hold_listening(decision.delay, receive)
        finally:
            self._held -= 1
        return ("gone", receive) if after is None else ("held", after)

    async def _carry_merges(
        self, merges: list[tuple[list[str], str]], tier: str, now: float
    ) -> None:
        """Carry merged clusters' usage, waiting no longer than storage.timeout (it is on the
        request's path); when storage fails the usage is not carried, and that is counted."""
        try:
            async with asyncio.timeout(self.storage.timeout):
                await self._carry_usage(merges, tier, now)
        except Exception as exc:  # storage down or slow
            self.metrics.storage_errors.labels("merge").inc()
            log.warning("hydraguard: could not carry merged clusters' usage: %r", exc)

    async def _carry_usage(
        self, merges: list[tuple[list[str], str]], tier: str, now: float
    ) -> None:
        """Merged clusters keep their usage: the absorbed clusters' windows add to the survivor's."""
        specs = self.gate.planner.cluster_specs(tier)
        for absorbed, survivor in merges:
            for suffix, window in specs:
                await self.storage.primary.merge_windows(
                    [cluster_prefix(c) + suffix for c in absorbed],
                    cluster_prefix(survivor) + suffix,
                    window,
                    now,
                )

    def complete(
        self,
        decision: Decision,
        facts: RequestFacts | None,
        input_tokens: int,
        output_tokens: int,
        status: int,
        now: float,
        defer: bool = False,
    ) -> None:
        """After the response (or what stood for it): settle, release, and learn from it."""
        self.gate.settle(decision, input_tokens + output_tokens, now)
        if facts is not None and self.learning.active:
            self.learning.learn(decision, facts, input_tokens, output_tokens, status, defer)

    def _count_actions(self, decision: Decision) -> None:
        for rule, action, shadow in decision.action_rules:
            mode = "shadow" if shadow else "enforce"
            self.metrics.anomaly_actions.labels(self.policy.name, rule, action, mode).inc()
        if decision.actions:
            for detector in decision.detectors:
                self.metrics.anomaly_detectors.labels(detector).inc()

    async def _invalid(
        self,
        route: CompiledRoute,
        dialect: Dialect,
        send: Send,
        status: int,
        message: str,
        code: str,
    ) -> None:
        """A body refused before deciding (413, 400): charged nothing, counted as invalid."""
        reason = _INVALID_REASONS[code]
        self.metrics.decision(self.policy.name, route.name, "invalid", reason)
        await send_error(send, dialect, status, message, code)

    async def _refuse_held(
        self,
        route: CompiledRoute,
        dialect: Dialect,
        decision: Decision,
        extra: list[tuple[bytes, bytes]],
        send: Send,
    ) -> None:
        """429 for a delayed request when ``anomaly.max_delayed`` requests are held already."""
        self.metrics.decision(self.policy.name, route.name, "deny", decision.rule)
        self._count_actions(decision)
        await send_error(
            send,
            dialect,
            429,
            "Too many requests are being held; retry later.",
            "rate_limit_exceeded",
            headers=[(b"retry-after", str(max(1, round(decision.delay))).encode()), *extra],
            extra={"rule": decision.rule, "reason": "throttled"},
        )

    async def _refuse(
        self,
        route: CompiledRoute,
        dialect: Dialect,
        decision: Decision,
        extra: list[tuple[bytes, bytes]],
        send: Send,
    ) -> None:
        outcome = "storage_closed" if decision.degraded == "storage_closed" else "deny"
        if decision.actions or decision.shadow_actions:
            self._count_actions(decision)
        self.metrics.decision(self.policy.name, route.name, outcome, decision.rule or "storage")
        await send_refusal(send, dialect, decision, extra)

    async def _forward(
        self,
        route: CompiledRoute,
        dialect: Dialect,
        decision: Decision,
        facts: RequestFacts | None,
        extra: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
        app: ASGIApp,
        note: _Note | None,
    ) -> None:
        reader = UsageReader(dialect)
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = list(message.get("headers", ()))
                reader.start(raw)
                message = {**message, "headers": with_ratelimit_headers(raw, extra)}
            elif message["type"] == "http.response.body":
                reader.feed(message.get("body", b""))
            await send(message)

        self.in_flight.inc()
        try:
            await app(scope, receive, observe)
        except BaseException as exc:
            if not status:  # no answer started: record what the client got instead
                # The server answers 500 for an app that raised; 499 (nginx's "client
                # closed request") when the request was cancelled because the client left.
                status = 499 if isinstance(exc, asyncio.CancelledError) else 500
            raise
        finally:
            # Runs on completion, error and cancellation alike: settle and release the slot.
            self.in_flight.dec()
            usage = self._settle(route, dialect, decision, facts, reader, status)
            if note is not None:
                self._audit(note, decision.identity, status, usage)

    def _audit(
        self,
        note: _Note,
        identity: Identity,
        status: int,
        usage: tuple[int, int] | None,
    ) -> None:
        """The traffic-log line of this request (the body as the client sent it)."""
        assert self.audit is not None
        note.written = True
        record = audit_record(
            identity, note.method, note.path, note.body or None, status, usage, note.ts,
            self.audit_headers, self.audit_state_keys,
        )  # fmt: skip
        self.audit.write(record, note.place)

    def _settle(
        self,
        route: CompiledRoute,
        dialect: Dialect,
        decision: Decision,
        facts: RequestFacts | None,
        reader: UsageReader,
        status: int,
    ) -> tuple[int, int] | None:
        reader.finish()
        tally = reader.tally
        if facts is None:
            input_tokens = output_tokens = 0
            source = "none"
        elif dialect.usage_later:
            input_tokens, output_tokens = usage_reported_later(
                status, decision.input_estimate, decision.output_reserved
            )
            source = "estimate"
        elif tally.input_tokens is not None and tally.output_tokens is not None:
            input_tokens, output_tokens, source = tally.input_tokens, tally.output_tokens, "usage"
        else:
            # No usage from the upstream (client gone, upstream error, stream cut): charge
            # the input (as reported, else estimated) plus what was visibly streamed.
            input_tokens = (
                tally.input_tokens if tally.input_tokens is not None else decision.input_estimate
            )
            output_tokens = reader.output_estimate(
                self.policy.chars_per_token, status, decision.output_reserved
            )
            source = "estimate"
        self.complete(
            decision, facts, input_tokens, output_tokens, status, self.clock(), defer=True
        )
        if source == "none":
            return None
        self._route_metrics(route)[1 if source == "usage" else 2].inc(input_tokens + output_tokens)
        return input_tokens, output_tokens

    def _route_metrics(self, route: CompiledRoute) -> tuple[Any, Any, Any]:
        """Per-route metric children, looked up once (labels() costs more than inc())."""
        found = self._route_children.get(route.name)
        if found is None:
            name = self.policy.name
            found = self._route_children[route.name] = (
                self.metrics.tokens_reserved.labels(name, route.name),
                self.metrics.tokens_settled.labels(name, route.name, "usage"),
                self.metrics.tokens_settled.labels(name, route.name, "estimate"),
            )
        return found
