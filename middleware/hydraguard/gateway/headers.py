"""Header rules of a reverse proxy: hop-by-hop removal and X-Forwarded-* bookkeeping."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def end_to_end(headers: Iterable[tuple[bytes, bytes]], drop: Iterable[bytes] = ()) -> RawHeaders:
    """The headers minus hop-by-hop ones (and those listed in ``Connection``) and ``drop``.

    Names come back lower-cased, as ASGI expects them.
    """
    lowered = [(name.lower(), value) for name, value in headers]
    listed = {
        token.strip().lower()
        for name, value in lowered
        if name == b"connection"
        for token in value.split(b",")
    }
    skip = HOP_BY_HOP | listed | set(drop)
    return [(name, value) for name, value in lowered if name not in skip]


def upstream_request_headers(scope: Scope, *, keep_length: bool) -> RawHeaders:
    """What the proxy sends upstream for this ASGI request.

    ``host`` is left out (the upstream client sets its own); ``content-length`` is kept
    only when the body is relayed as it arrives, since a re-sent body gets its own.
    """
    drop = [b"host"] if keep_length else [b"host", b"content-length"]
    headers = end_to_end(scope["headers"], drop)
    prior = [value for name, value in headers if name == b"x-forwarded-for"]
    headers = [(name, value) for name, value in headers if name != b"x-forwarded-for"]
    client = scope.get("client")
    chain = prior + ([client[0].encode("latin-1")] if client else [])
    if chain:
        headers.append((b"x-forwarded-for", b", ".join(chain)))
    present = {name for name, _ in headers}
    if b"x-forwarded-proto" not in present:
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    host = next((value for name, value in scope["headers"] if name.lower() == b"host"), None)
    if host is not None and b"x-forwarded-host" not in present:
        headers.append((b"x-forwarded-host", host))
    return headers
