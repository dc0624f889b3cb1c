"""Answers hydraguard gives itself (429, 413, 400, 503), in the route's dialect."""

from __future__ import annotations

from typing import Any

from starlette.types import Send

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
