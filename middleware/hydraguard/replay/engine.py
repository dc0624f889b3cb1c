"""Each logged request through the live decision code (``Guard.decide`` / ``Guard.complete``),
with memory storage and the log's timestamps as the clock.

For an admitted request the logged status and usage stand for the upstream's answer,
its output cut to any ``max_tokens`` cap the decision applied, except on routes billed later
(batches), settled from the logged status by the live path's rule (``usage_reported_later``);
a refused one is charged nothing and serves nothing, and so is an admitted one that
hydraguard answered 400 itself (logged without usage). Requests complete at their arrival
second: the log has no latencies, so concurrency limits never bind in a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from ..identify import Identity
from ..inspect.body import READING_METHODS
from ..inspect.dialects import DIALECTS
from ..middleware import HydraGuard
from ..observe.usage import usage_reported_later
from ..policy.compiled import CompiledPolicy
from ..record.audit import TRUNCATED
from .reader import Entry

# What one record came to, as a plain tuple in ``Outcome``'s field order after ``line``:
# (account, cluster, admitted, output_tokens, actions, rule, risk, error, ts, requested,
#  shadow_denied, routed, shadow_actions). The replay loop unpacks it at once; a tuple is
# several times cheaper to build than an object, and this is built once per logged line.
Result = tuple[
    str | None, str | None, bool, int, tuple[str, ...], str | None, float, str | None,
    float, int, bool, bool, tuple[str, ...],
]  # fmt: skip


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
        line = decision_line(
            self.line, self.account, self.cluster, self.admitted, self.output_tokens,
            self.actions, self.rule, self.risk, self.error,
        )  # fmt: skip
        line["actions"] = list(self.actions)  # as it reads back from JSON
        return line


def decision_line(
    line: int,
    account: str | None,
    cluster: str | None,
    admitted: bool,
    output_tokens: int,
    actions: tuple[str, ...],
    rule: str | None,
    risk: float,
    error: str | None,
) -> dict[str, object]:
    """The decision line (DESIGN.md), keys in the documented order; ``actions`` stays a
    tuple, which orjson writes as the same JSON array as a list."""
    if error is None:
        return {
            "line": line, "account": account, "cluster": cluster, "admitted": admitted,
            "output_tokens": output_tokens, "actions": actions, "rule": rule, "risk": risk,
        }  # fmt: skip
    return {
        "line": line, "account": account, "cluster": cluster, "admitted": admitted,
        "output_tokens": output_tokens, "actions": actions, "rule": rule, "risk": risk,
        "error": error,
    }  # fmt: skip


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("replay never forwards a request")  # pragma: no cover


_NONE: tuple[str, ...] = ()
_NUMBER = (int, float)
_NO_STATE: dict[str, Any] = {}  # a line without a "state" field; never written to


def malformed(error: str | None) -> Result:
    """A line that is not a usable record: refused, nothing served, with the reason."""
    return (None, None, False, 0, _NONE, None, 0.0, error, 0.0, 0, False, True, _NONE)


def _body_problem(body: object, max_bytes: int) -> str | None:
    """Why the live path would have refused this body before deciding (400/413)."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    marker = body.get(TRUNCATED)
    if isinstance(marker, dict) and isinstance(marker.get("bytes"), int):
        if marker["bytes"] > max_bytes:
            return f"body of {marker['bytes']} bytes exceeds the route's max_bytes ({max_bytes})"
    return None


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
        self._match = policy.routes.match

    def clock(self) -> float:
        return self.now

    async def step(self, entry: Entry) -> Outcome:
        record = entry.record
        return Outcome(
            entry.line,
            *(await self.decide(record) if record is not None else malformed(entry.error)),
        )

    async def decide(self, record: dict[str, Any]) -> Result:
        """One checked record (``reader.check_record``) through the guard.

        Runs once per logged request: fields are read once into locals, and the common
        cases (a plain JSON body, no usage field missing, a zero risk) skip helper calls."""
        get = record.get
        ts = float(record["ts"])
        # An audit log is in arrival order, but a line the log stopped waiting for (a long
        # stream) comes late, and a system clock can step back: the replay clock never does.
        if ts > self.now:
            self.now = ts
        now = self.now
        account = record["account"]
        usage = get("usage")
        logged_output = 0
        logged_input = None
        if usage:
            value = usage.get("output_tokens")
            if isinstance(value, _NUMBER):  # checked non-negative by the reader
                logged_output = int(value)
            value = usage.get("input_tokens")
            if isinstance(value, _NUMBER):
                logged_input = int(value)
        route = self._match(record["path"])
        if route is None:
            return (
                account, None, True, logged_output, _NONE, None, 0.0, None,
                ts, logged_output, False, False, _NONE,
            )  # fmt: skip
        dialect = DIALECTS[route.dialect]
        facts = None
        if dialect.reads_body and (
            (body := get("body")) is not None or get("method") not in READING_METHODS
        ):
            # Only a non-dict or a truncation marker can be refused before deciding.
            if body.__class__ is not dict or TRUNCATED in body:
                problem = _body_problem(body, route.max_bytes)
                if problem is not None:
                    return (
                        account, None, False, 0, _NONE, None, 0.0, problem,
                        ts, logged_output, False, True, _NONE,
                    )  # fmt: skip
            facts = dialect.parse(body)  # type: ignore[arg-type]  # checked by _body_problem
        headers = get("headers") or {}
        state = get("state")  # the scope["state"] keys the policy reads, when any was set
        if state.__class__ is not dict:
            state = _NO_STATE
        guard = self.guard
        identity = Identity(
            account, guard.identifier.tier_for(headers, state), get("ip"), headers, state
        )
        decision = await guard.decide(identity, facts, now)
        served = 0
        if decision.admitted:
            status = get("status") or 200
            if status == 400 and usage is None and facts is not None:
                # Admitted, then answered 400 by hydraguard itself, never forwarded: a body
                # that needed a rewrite (cap, strip, stream usage) but is nested too deeply
                # to be written back (Guard.handle, Unwritable); an upstream's 400 is logged
                # with usage. The live path gave the tokens back and learnt nothing from it,
                # where replay charged the input estimate and learnt from it.
                guard.gate.settle(decision, 0, now)
            else:
                if dialect.usage_later:  # the logged usage is what the live path charged
                    used_input, served = usage_reported_later(
                        status, decision.input_estimate, decision.output_reserved
                    )
                else:
                    served = logged_output
                    if decision.output_cap is not None:
                        served = min(served, decision.output_cap * (facts.n if facts else 1))
                    used_input = (
                        logged_input if logged_input is not None else decision.input_estimate
                    )
                guard.complete(decision, facts, used_input, served, status, now)
        risk = decision.risk
        if risk:  # round(0.0, 4) is 0.0: skip the call for the usual zero
            risk = round(risk, 4)
        return (
            account, decision.cluster, decision.admitted, served, tuple(decision.actions),
            decision.rule, risk, None, ts, logged_output, decision.shadow_denied, True,
            tuple(getattr(decision, "shadow_actions", ())),
        )  # fmt: skip

    async def aclose(self) -> None:
        await self.hydra.drain()
        await self.hydra.aclose()
