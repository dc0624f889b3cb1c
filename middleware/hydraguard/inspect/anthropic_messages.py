"""Anthropic messages: request fields, error envelope, usage (JSON, message_start/message_delta)."""

from __future__ import annotations

import json
from typing import Any

from .dialect import Dialect, StreamTally
from .facts import RequestFacts, as_count, param_flag, param_float, param_int, text_of

# Anthropic's documented error types per status; else 4xx invalid_request_error, 5xx api_error.
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _input_tokens(usage: dict[str, Any]) -> int | None:
    # Prompt-cache reads and writes are input the model processed; they count.
    base = as_count(usage.get("input_tokens"))
    if base is None:
        return None
    cached = (as_count(usage.get("cache_creation_input_tokens")) or 0) + (
        as_count(usage.get("cache_read_input_tokens")) or 0
    )
    return base + cached


class AnthropicMessages(Dialect):
    name = "anthropic-messages"
    reads_body = True

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        nested: list[str] = []
        texts = [text_of(body.get("system"), nested)]
        count = 0
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    count += 1
                    texts.append(text_of(message.get("content"), nested))
        model = body.get("model")
        # Positional, in field order: keyword arguments cost twice as much (per request).
        return RequestFacts(
            body,
            "\n".join(t for t in texts if t),  # prompt
            count,  # messages
            param_int(body.get("max_tokens")),  # max_tokens
            param_flag(body.get("stream")),  # stream
            1,  # n
            False,  # logprobs
            None,  # top_logprobs
            False,  # logit_bias
            param_float(body.get("temperature")),  # temperature
            model if isinstance(model, str) else None,  # model
            sum(map(len, nested)),  # extra_chars
        )

    def error_body(
        self, status: int, message: str, code: str | None, extra: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        error: dict[str, Any] = {"type": _ERROR_TYPES.get(status, fallback), "message": message}
        if code:
            error["code"] = code
        error.update(extra)
        return b"application/json", json.dumps({"type": "error", "error": error}).encode()

    def usage(self, body: Any) -> tuple[int, int] | None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return None
        prompt, output = _input_tokens(usage), as_count(usage.get("output_tokens"))
        if prompt is None or output is None:
            return None
        return prompt, output

    def stream_event(self, event: Any, into: StreamTally) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            found = _input_tokens(usage) if isinstance(usage, dict) else None
            if found is not None:  # a broken count never erases a valid earlier one
                into.input_tokens = found
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                # Counts in message_delta are cumulative for the whole message: a later one
                # replaces what was known, but a missing or broken one never erases it, and
                # one that leaves out the cache fields never lowers message_start's input.
                output = as_count(usage.get("output_tokens"))
                if output is not None:
                    into.output_tokens = output
                found = _input_tokens(usage)
                if found is not None and (into.input_tokens is None or found > into.input_tokens):
                    into.input_tokens = found
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
                if isinstance(text, str) and text:
                    into.chars += len(text)
                    into.deltas += 1
