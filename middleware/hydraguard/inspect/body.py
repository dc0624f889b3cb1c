"""Read a request body up to the policy's cap, then hand the app the same bytes."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import Message, Receive

# Methods that read rather than create (RFC 9110 safe methods): on a model route they list
# (GET /v1/messages/batches lists batches, GET /v1/chat/completions stored completions) or
# are a CORS preflight. Sent without a body, such a request has nothing to read: it is
# counted in requests only, as on a generic route, instead of refused as malformed JSON.
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, cap: int, declared: str | None) -> bytes:
    if declared is not None:
        try:
            if int(declared) > cap:
                raise BodyTooLarge  # refuse before reading a byte
        except ValueError:
            pass  # a malformed content-length: the server enforces framing; we count bytes
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay_receive(body: bytes, receive: Receive) -> Receive:
    """A receive that yields ``body`` once, then whatever the client sends (disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def with_content_length(scope: MutableMapping[str, Any], length: int) -> dict[str, Any]:
    """A copy of ``scope`` whose content-length matches a rewritten body."""
    headers = [
        (k, v)
        for k, v in scope["headers"]
        if k.lower() not in (b"content-length", b"transfer-encoding")
    ]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}
