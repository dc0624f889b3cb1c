"""Streaming reverse proxy to the model API, over one shared ``httpx.AsyncClient``.

Request bodies are relayed as they arrive and response bodies chunk by chunk
(``aiter_raw``: content-encoding passes through untouched), so SSE streams reach the
client token by token while hydraguard's middleware observes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from hydraguard.gateway.envelopes import default_error_response
from hydraguard.gateway.headers import end_to_end, upstream_request_headers

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "ErrorResponse",
    "UpstreamProxy",
    "create_proxy_app",
    "default_error_response",
    "upstream_base",
]

logger = logging.getLogger("hydraguard.gateway")

ErrorResponse = Callable[[str, int, str], Response]

# Read is per chunk, not per response: a non-streaming completion may think for minutes.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)
# Long-lived streams each hold a connection; httpx's default of 100 would queue them.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30.0
)


def upstream_base(upstream: str) -> httpx.URL:
    """``upstream`` as a base URL; ValueError saying what is wrong with it otherwise."""
    try:
        base = httpx.URL(upstream)
        port = base.port  # httpx parses any number, and a bad one fails only at connect
    except httpx.InvalidURL as exc:
        raise ValueError(f"upstream {upstream!r} is not a URL: {exc}") from None
    if base.scheme not in ("http", "https") or not base.host or base.query or base.fragment:
        raise ValueError(
            f"upstream must be an http(s) base URL without query or fragment: {upstream!r}"
        )
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"upstream {upstream!r} has port {port}, not in 1-65535")
    return base


class UpstreamProxy:
    """ASGI app forwarding every HTTP request to ``upstream`` (a base URL, path prefix allowed).

    Upstream unreachable -> 502, too slow -> 504, a path with dot or empty segments -> 400,
    all built by ``error_response(path, status, message)``. A client that leaves before the
    upstream answers cancels the upstream request; an upstream that breaks off mid-body
    cuts the client's response off too. Call :meth:`aclose` on shutdown (the ASGI lifespan
    does it).
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
        error_response: ErrorResponse = default_error_response,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = upstream_base(upstream)
        self._base = base
        self._prefix = base.raw_path.rstrip(b"/")
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._limits = limits or DEFAULT_LIMITS
        self._transport = transport
        self._error_response = error_response
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared pooled client, created on first use."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                transport=self._transport,
                # A proxy must not pick up env proxies/.netrc credentials nor keep a
                # shared cookie jar filled by upstream responses meant for clients.
                trust_env=False,
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        path: str = scope["path"]
        if _ambiguous(path):
            message = (
                "path has empty or dot segments; the upstream could resolve it to another route"
            )
            await self._error_response(path, 400, message)(scope, receive, send)
            return
        first = await receive()
        # Skip empty leading messages so a body-less request is sent without a body.
        while first["type"] == "http.request" and first.get("more_body") and not first.get("body"):
            first = await receive()
        if first["type"] == "http.disconnect":
            return
        body_sent = asyncio.Event()
        if first.get("more_body", False):
            content: bytes | AsyncIterator[bytes] = _relay_request(first, receive, body_sent)
            headers = upstream_request_headers(scope, keep_length=True)
        else:
            content = first.get("body", b"")
            headers = upstream_request_headers(scope, keep_length=False)
            body_sent.set()
        request = httpx.Request(scope["method"], self._url(scope), headers=headers, content=content)
        try:
            upstream = await self._send(request, receive, body_sent)
        except ClientDisconnect:
            return
        except httpx.TimeoutException as exc:
            logger.warning("upstream timed out for %s %s: %r", scope["method"], path, exc)
            await self._error_response(path, 504, "upstream did not answer in time")(
                scope, receive, send
            )
            return
        except httpx.TransportError as exc:
            logger.warning("upstream unreachable for %s %s: %r", scope["method"], path, exc)
            await self._error_response(path, 502, "upstream is unreachable")(scope, receive, send)
            return
        if upstream is None:
            return  # the client left before the upstream answered
        body = _relay_response(upstream, path)
        response = StreamingResponse(body, status_code=upstream.status_code)
        response.raw_headers = end_to_end(upstream.headers.raw)
        try:
            await response(scope, receive, send)
        finally:
            # Not a BackgroundTask: it would be skipped when the client disconnects.
            await body.aclose()
            await upstream.aclose()

    async def _send(
        self, request: httpx.Request, receive: Receive, body_sent: asyncio.Event
    ) -> httpx.Response | None:
        """The upstream's response headers, or None when the client left first.

        A non-streaming completion may think for minutes before its headers; a client that
        gave up must not leave the upstream generating (and the gateway holding the
        connection, and shutdown waiting) until the read timeout. Cancelling the send makes
        httpcore close that connection rather than return it to the pool half-read.
        """
        sending = asyncio.ensure_future(self.client.send(request, stream=True))
        leaving = asyncio.ensure_future(_client_left(receive, body_sent))
        waited = False
        try:
            await asyncio.wait({sending, leaving}, return_when=asyncio.FIRST_COMPLETED)
            waited = True
        finally:  # also when this request is cancelled: neither task may outlive it...
            leaving.cancel()
            sending.cancel()  # a no-op once it is done
            await asyncio.wait({sending})
            if not waited and not sending.cancelled() and sending.exception() is None:
                # ...nor an answer that arrived meanwhile hold its pooled connection.
                await sending.result().aclose()
        if sending.cancelled():
            leaving.result()  # it ended first: re-raise a failing receive, if that was it
            return None
        return sending.result()  # raises what the send raised

    def _url(self, scope: Scope) -> httpx.URL:
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        target = self._prefix + raw_path + (b"?" + query if query else b"")
        return self._base.copy_with(raw_path=target)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _relay_request(
    first: Message, receive: Receive, body_sent: asyncio.Event
) -> AsyncIterator[bytes]:
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if body := message.get("body", b""):
            yield body
        if not message.get("more_body", False):
            body_sent.set()
            return
        message = await receive()


async def _client_left(receive: Receive, body_sent: asyncio.Event) -> None:
    """Returns when the client disconnects; ``receive`` is the body relay's until it is sent."""
    await body_sent.wait()
    if (await receive())["type"] != "http.disconnect":
        # Nothing else may follow a whole body (ASGI); do not spin on a server that differs.
        await asyncio.Future()


def _ambiguous(path: str) -> bool:
    """Dot segments (``/v1/x/../chat/completions``, also percent-encoded) are resolved by
    httpx before sending, and empty ones (``//``) merged by common front servers (nginx's
    merge_slashes): the upstream would serve a route HydraGuard's routes did not match,
    unlimited. No API client sends them."""
    segments = path.split("/")[1:]
    return "." in segments or ".." in segments or "" in segments[:-1]  # a trailing "/" is fine


async def _relay_response(upstream: httpx.Response, path: str) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        # Headers are out. Ending the body normally would pass a cut stream off as complete
        # (a chunked response would get its last chunk); raising makes the server drop the
        # connection, so the client sees a truncated response.
        logger.warning("upstream response for %s broke off mid-stream: %r", path, exc)
        raise


def create_proxy_app(upstream: str, **options: Any) -> Starlette:
    """A Starlette app proxying every path to ``upstream``; the lifespan closes the client.

    ``options`` go to :class:`UpstreamProxy`; the proxy is ``app.state.proxy``.
    """
    proxy = UpstreamProxy(upstream, **options)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await proxy.aclose()

    app = Starlette(routes=[Route("/{path:path}", proxy)], lifespan=lifespan)
    app.state.proxy = proxy
    return app
