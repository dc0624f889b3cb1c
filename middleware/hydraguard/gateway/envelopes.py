"""Error bodies in the shape each API's clients expect, and the gateway's default picker.

The dialect module will own envelopes for the middleware; the gateway keeps its own
small set so the proxy and the mock work on their own, and the proxy takes the picker
as an injectable callable so the lead can swap in the dialect's builder.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse, Response

# Anthropic's documented error types per status; anything else 5xx is "api_error".
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_OPENAI_SUFFIXES = ("/v1/chat/completions", "/v1/completions")
_ANTHROPIC_SUFFIXES = ("/v1/messages",)


def openai_error(status: int, message: str, *, param: str | None = None) -> JSONResponse:
    """OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    if status == 429:
        error_type = "rate_limit_error"
    elif status >= 500:
        error_type = "server_error"
    else:
        error_type = "invalid_request_error"
    body = {"error": {"message": message, "type": error_type, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def anthropic_error(status: int, message: str) -> JSONResponse:
    """Anthropic's envelope: ``{"type": "error", "error": {"type", "message"}}``."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    error_type = _ANTHROPIC_TYPES.get(status, fallback)
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status)


def problem(status: int, message: str) -> JSONResponse:
    """RFC 9457 problem details, for routes that speak neither model API."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": message}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def default_error_response(path: str, status: int, message: str) -> Response:
    """Pick the envelope by the request path's API route."""
    route = path.split("?", 1)[0].rstrip("/")
    if route.endswith(_ANTHROPIC_SUFFIXES):
        return anthropic_error(status, message)
    if route.endswith(_OPENAI_SUFFIXES):
        return openai_error(status, message)
    return problem(status, message)
