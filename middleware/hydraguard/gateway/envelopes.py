"""Error responses for the gateway and the mock model, in the shape each API's clients
expect — built by the same dialect code the middleware answers with."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ..inspect.dialects import DIALECTS, dialect_for_path


def _response(dialect: str, status: int, message: str, extra: dict[str, Any]) -> Response:
    content_type, body = DIALECTS[dialect].error_body(status, message, None, extra)
    return Response(body, status_code=status, media_type=content_type.decode())


def openai_error(status: int, message: str, *, param: str | None = None) -> Response:
    """OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return _response("openai-chat", status, message, {"param": param})


def anthropic_error(status: int, message: str) -> Response:
    """Anthropic's envelope: ``{"type": "error", "error": {"type", "message"}}``."""
    return _response("anthropic-messages", status, message, {})


def problem(status: int, message: str) -> Response:
    """RFC 9457 problem details, for routes that speak neither model API."""
    return _response("generic", status, message, {})


def default_error_response(path: str, status: int, message: str) -> Response:
    """Pick the envelope by the request path's API route."""
    dialect = dialect_for_path(path.split("?", 1)[0].rstrip("/"))
    content_type, body = dialect.error_body(status, message, None, {})
    return Response(body, status_code=status, media_type=content_type.decode())
