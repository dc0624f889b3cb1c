"""Answers hydraguard gives itself (429, 413, 400, 503), in the route's dialect."""

from __future__ import annotations

from typing import Any

from starlette.types import Send

from .admit.gate import Decision
from .admit.plan import BLOCK
from .inspect.dialect import Dialect


async def send_error(
    send: Send,
    dialect: Dialect,
    status: int,
    message: str,
    code: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    content_type, body = dialect.error_body(status, message, code, extra or {})
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_refusal(
    send: Send, dialect: Dialect, decision: Decision, extra: list[tuple[bytes, bytes]]
) -> None:
    """429 (or 503 when storage failed closed) with the reason: the rule, never detector internals."""
    if decision.degraded == "storage_closed":
        await send_error(
            send,
            dialect,
            503,
            "Rate limiter storage is unavailable and this policy fails closed; retry shortly.",
            "rate_limiter_unavailable",
            headers=[(b"retry-after", b"1")],
            extra={"reason": "storage"},
        )
        return
    wait = decision.retry_after
    limit = next((item for item in decision.plan.limits if item.rule == decision.rule), None)
    if "block" in decision.actions:
        reason, message = (
            "risk",
            f"Requests from this account are blocked for {wait} s ({decision.rule}).",
        )
    elif decision.rule == BLOCK.rule:
        reason, message = "blocked", f"This account is blocked for {wait} s."
    elif decision.too_large:
        reason = "quota"
        message = (
            f"This request alone exceeds the limit {decision.rule} ({getattr(limit, 'text', '')}); "
            "lower max_tokens or shorten the prompt."
        )
    else:
        reason = "quota"
        message = f"Rate limit exceeded: {decision.rule} ({getattr(limit, 'text', '')}). Retry after {wait} s."
    await send_error(
        send,
        dialect,
        429,
        message,
        "rate_limit_exceeded",
        headers=[(b"retry-after", str(wait).encode()), *extra],
        extra={"rule": decision.rule, "reason": reason},
    )
