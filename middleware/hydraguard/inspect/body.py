"""Read a request body up to the policy's cap, parse it, then hand the app the same bytes;
listen to the client while a request is held."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Message, Receive

if TYPE_CHECKING:
    from .dialect import Dialect
    from .facts import RequestFacts

# A body larger than this is parsed in a worker thread. Parsing is linear, but a body made
# of many small items (350,000 empty messages in 1 MiB, 96,000 batch entries in 8 MiB) took
# 0.2 s and 1.1 s of Python; on the event loop that stalls every other request. In a thread
# the loop gets the interpreter back every switch interval (5 ms). Ordinary bodies stay
# inline: the thread hop costs more than parsing them.
OFF_LOOP_BYTES = 64 * 1024

# Methods that read rather than create (RFC 9110 safe methods): on a model route they list
# (GET /v1/messages/batches lists batches, GET /v1/chat/completions stored completions) or
# are a CORS preflight. Sent without a body, such a request has nothing to read: it is
# counted in requests only, as on a generic route, instead of refused as malformed JSON.
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class NotJSONObject(ValueError):
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
    return _replay({"type": "http.request", "body": body, "more_body": False}, receive)


def _replay(message: Message, receive: Receive) -> Receive:
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return message
        return await receive()

    return replay


async def hold_listening(seconds: float, receive: Receive) -> Receive | None:
    """Wait ``seconds``, listening to the client: None when it leaves meanwhile, else the
    receive the app reads from (a message that came meanwhile, a body not read yet, first).

    A server such as uvicorn does not cancel a request whose client left: it answers its next
    receive() with http.disconnect. Unheard, a request whose client left while held was
    forwarded after the hold, and the model ran for nobody at the account's expense."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    listening = asyncio.ensure_future(receive())
    try:
        await asyncio.wait([listening], timeout=seconds)
        if not listening.done():
            # Still there and quiet: stop listening (a receive() cancelled while it waits
            # gives nothing up); the app receives as usual.
            listening.cancel()
            await asyncio.wait([listening])
        elif listening.result()["type"] != "http.disconnect":
            await asyncio.sleep(until - loop.time())  # the rest of the hold
    except BaseException:
        listening.cancel()
        raise
    if listening.cancelled():
        return receive
    message: Message = listening.result()
    return None if message["type"] == "http.disconnect" else _replay(message, receive)


def with_content_length(scope: MutableMapping[str, Any], length: int) -> dict[str, Any]:
    """A copy of ``scope`` whose content-length matches a rewritten body."""
    headers = [
        (k, v)
        for k, v in scope["headers"]
        if k.lower() not in (b"content-length", b"transfer-encoding")
    ]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


def parse_facts(dialect: Dialect, body: bytes) -> RequestFacts:
    """What ``dialect`` reads of a JSON body; NotJSONObject if the body is not one."""
    try:
        parsed = orjson.loads(body)  # also refuses bytes that are not UTF-8
    except ValueError as exc:
        raise NotJSONObject(str(exc)) from exc
    if not isinstance(parsed, dict):
        raise NotJSONObject("not a JSON object")
    return dialect.parse(parsed)


async def read_facts(dialect: Dialect, body: bytes) -> RequestFacts:
    """``parse_facts``, off the event loop for a body over ``OFF_LOOP_BYTES``."""
    if len(body) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse_facts, dialect, body)
    return parse_facts(dialect, body)
