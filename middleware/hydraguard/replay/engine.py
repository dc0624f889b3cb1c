"""Each logged request through the live decision code (``Guard.decide`` / ``Guard.complete``),
with memory storage and the log's timestamps as the clock.

For an admitted request the logged status and usage stand for the upstream's answer,
its output cut to any ``max_tokens`` cap the decision applied; a refused one is
charged nothing and serves nothing. Requests complete at their arrival second: the
log has no latencies, so concurrency limits never bind in a replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from ..identify import Identity
from ..inspect.dialects import DIALECTS
from ..inspect.facts import RequestFacts
from ..middleware import HydraGuard
from ..policy.compiled import CompiledPolicy
from ..record.audit import TRUNCATED
from .reader import Entry


@dataclass(slots=True)
class Outcome:
    """One decision line, plus what the report needs from the record."""

    line: int
    account: str | None
    cluster: str | None
    admitted: bool
    output_tokens: int  # served
    actions: tuple[str, ...]
    rule: str | None
    risk: float
    error: str | None = None
    ts: float = 0.0
    requested: int = 0  # the logged output tokens: what the upstream gave without hydraguard
    shadow_denied: bool = False
    routed: bool = True  # False: no policy route matched, passed through
    shadow_actions: tuple[str, ...] = ()  # what shadow anomaly rules would have done

    def line_dict(self) -> dict[str, object]:
        line: dict[str, object] = {
            "line": self.line,
            "account": self.account,
            "cluster": self.cluster,
            "admitted": self.admitted,
            "output_tokens": self.output_tokens,
            "actions": list(self.actions),
            "rule": self.rule,
            "risk": self.risk,
        }
        if self.error is not None:
            line["error"] = self.error
        return line


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("replay never forwards a request")  # pragma: no cover


def _tokens(usage: dict[str, object] | None, key: str) -> int | None:
    value = usage.get(key) if usage else None
    return int(value) if isinstance(value, int | float) else None


class Engine:
    """One policy's replay state: a HydraGuard on memory storage, driven by the log's clock."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.now = 0.0
        self.hydra = HydraGuard(
            _no_app,
            policy=policy,
            storage="memory://",
            registry=CollectorRegistry(),
            clock=self.clock,
        )
        self.guard = self.hydra.guard
        self.policy = policy

    def clock(self) -> float:
        return self.now

    async def step(self, entry: Entry) -> Outcome:
        record = entry.record
        if record is None:
            return Outcome(entry.line, None, None, False, 0, (), None, 0.0, error=entry.error)
        ts = float(record["ts"])
        # An audit log is written as requests finish, so arrival stamps can be slightly
        # out of order; the replay clock never goes back.
        if ts > self.now:
            self.now = ts
        now = self.now
        account = record["account"]
        usage = record.get("usage")
        logged_output = _tokens(usage, "output_tokens") or 0
        route = self.policy.routes.match(record["path"])
        if route is None:
            return Outcome(
                entry.line, account, None, True, logged_output, (), None, 0.0,
                ts=ts, requested=logged_output, routed=False,
            )  # fmt: skip
        dialect = DIALECTS[route.dialect]
        facts: RequestFacts | None = None
        if dialect.reads_body:
            body = record.get("body")
            problem = self._body_problem(body)
            if problem is not None:
                return Outcome(
                    entry.line, account, None, False, 0, (), None, 0.0,
                    error=problem, ts=ts, requested=logged_output,
                )  # fmt: skip
            facts = dialect.parse(body)  # type: ignore[arg-type]  # checked by _body_problem
        headers = record.get("headers") or {}
        guard = self.guard
        identity = Identity(
            account, guard.identifier.tier_for(headers, {}), record.get("ip"), headers
        )
        decision = await guard.decide(identity, facts, now)
        served = 0
        if decision.admitted:
            served = logged_output
            if decision.output_cap is not None:
                served = min(served, decision.output_cap * (facts.n if facts is not None else 1))
            logged_input = _tokens(usage, "input_tokens")
            used_input = logged_input if logged_input is not None else decision.input_estimate
            guard.complete(decision, facts, used_input, served, record.get("status") or 200, now)
        return Outcome(
            entry.line,
            account,
            decision.cluster,
            decision.admitted,
            served,
            tuple(decision.actions),
            decision.rule,
            round(decision.risk, 4),
            ts=ts,
            requested=logged_output,
            shadow_denied=decision.shadow_denied,
            shadow_actions=tuple(getattr(decision, "shadow_actions", ())),
        )

    def _body_problem(self, body: object) -> str | None:
        """Why the live path would have refused this body before deciding (400/413)."""
        if not isinstance(body, dict):
            return "body is not a JSON object"
        marker = body.get(TRUNCATED)
        if isinstance(marker, dict) and isinstance(marker.get("bytes"), int):
            if marker["bytes"] > self.policy.body_max_bytes:
                return f"body of {marker['bytes']} bytes exceeds body.max_bytes"
        return None

    async def aclose(self) -> None:
        await self.hydra.drain()
        await self.hydra.aclose()
