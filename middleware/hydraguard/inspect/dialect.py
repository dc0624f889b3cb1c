"""A route dialect: how to read a request, answer an error and find usage in a response."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from .facts import RequestFacts, param_int

_ABSENT = object()


class Dialect:
    name = "generic"
    reads_body = False  # generic routes count requests only and never buffer the body
    # The request fields that bound the output; a cap rewrites those present, else the last.
    cap_keys: tuple[str, ...] = ("max_tokens",)
    asks_stream_usage = False  # whether a streamed request must be told to report usage
    openai_headers = False  # whether responses carry OpenAI's x-ratelimit-* fields too
    # Whether the upstream bills the request after the response (batches): the response
    # carries no usage, so a success keeps its reservation (observe/usage.py).
    usage_later = False

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        return RequestFacts(body=body)

    def cap(self, data: dict[str, Any], cap: int) -> bool:
        """Ask the body ``data`` for at most ``cap`` output tokens; True when it changed.

        Rewrites the ``cap_keys`` present, else sets the last one: an absent limit means the
        upstream's default, which may be far above the cap. A limit already under the cap
        stays as written ("300" too, read as ``parse`` reads it): raising it to the cap would
        let the request produce more than the reservation (``capped_max_tokens``)."""
        changed = False
        for key in [k for k in self.cap_keys if k in data] or [self.cap_keys[-1]]:
            asked = param_int(data.get(key))
            if asked is None or asked > cap:
                data[key] = cap
                changed = True
        return changed

    def strip(self, data: dict[str, Any], name: str) -> bool:
        """Remove request parameter ``name`` from the body ``data``; True when it was there."""
        return data.pop(name, _ABSENT) is not _ABSENT

    def error_body(
        self, status: int, message: str, code: str | None, extra: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        """(content-type, body) of an error in this dialect. Generic: RFC 9457 problem details."""
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        problem = {
            "type": f"urn:hydraguard:{code}" if code else "about:blank",
            "title": title,
            "status": status,
            "detail": message,
            **extra,
        }
        return b"application/problem+json", json.dumps(problem).encode()

    def usage(self, body: Any) -> tuple[int, int] | None:
        """(input, output) tokens from a JSON response body, None when absent."""
        return None

    def stream_event(self, event: Any, into: StreamTally) -> None:
        """Fold one parsed SSE data object into the tally."""


class StreamTally:
    """What a stream has told us so far: usage fields when sent, text when not."""

    __slots__ = ("chars", "deltas", "input_tokens", "output_tokens")

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.chars = 0
        self.deltas = 0
