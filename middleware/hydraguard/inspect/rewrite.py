"""Rewrite a request body before it is forwarded; the content-length is fixed to match."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson

from .body import with_content_length
from .dialect import Dialect
from .facts import RequestFacts


class Unwritable(ValueError):
    """A body that needs a rewrite but cannot be written back: orjson reads JSON nested up
    to 1024 levels deep, and writes up to 254. Forwarding it unchanged would skip a cap or a
    strip, so it is refused instead."""


def rewrite_request(
    dialect: Dialect,
    facts: RequestFacts,
    body: bytes,
    scope: MutableMapping[str, Any],
    *,
    stream_usage: bool,
    cap: int | None = None,
    strip: tuple[str, ...] = (),
) -> tuple[bytes, MutableMapping[str, Any]]:
    data = facts.body
    if data is None:
        return body, scope
    changed = False
    if stream_usage and facts.stream and dialect.asks_stream_usage:
        options = data.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            # Ask for the final usage chunk so a stream is settled from real usage.
            data["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            changed = True
    if cap is not None and dialect.cap(data, cap):
        changed = True
    for name in strip:
        if dialect.strip(data, name):
            changed = True
    if not changed:
        return body, scope
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:  # nested too deep to write
        raise Unwritable(str(exc)) from exc
    return body, with_content_length(scope, len(body))
