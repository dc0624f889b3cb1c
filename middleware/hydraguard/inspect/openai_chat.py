"""OpenAI chat completions: request fields, error envelope, usage (JSON and final stream chunk)."""

from __future__ import annotations

import json
from typing import Any

from .dialect import Dialect, StreamTally
from .facts import NUMBERS, RequestFacts, as_count, as_int, text_of

_ERROR_TYPES = {429: "rate_limit_error"}  # else 4xx: invalid_request_error, 5xx: server_error


class OpenAIChat(Dialect):
    name = "openai-chat"
    reads_body = True

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        messages = body.get("messages")
        texts: list[str] = []
        count = 0
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    count += 1
                    texts.append(text_of(message.get("content")))
        max_tokens = as_int(body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = as_int(body.get("max_tokens"))
        temperature = body.get("temperature")
        top = as_int(body.get("top_logprobs"))
        model = body.get("model")
        # Positional, in field order: keyword arguments cost twice as much (per request).
        return RequestFacts(
            body,
            "\n".join(texts),  # prompt
            count,  # messages
            max_tokens,
            body.get("stream") is True,  # stream
            max(as_int(body.get("n")) or 1, 1),  # n
            body.get("logprobs") is True or bool(top),  # logprobs
            top,  # top_logprobs
            bool(body.get("logit_bias")),  # logit_bias
            float(temperature) if isinstance(temperature, NUMBERS) else None,  # temperature
            model if isinstance(model, str) else None,  # model
        )

    def error_body(
        self, status: int, message: str, code: str | None, extra: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        error = {
            "message": message,
            "type": _ERROR_TYPES.get(status, fallback),
            "param": None,
            "code": code,
            **extra,
        }
        return b"application/json", json.dumps({"error": error}).encode()

    def usage(self, body: Any) -> tuple[int, int] | None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return None
        prompt, completion = (
            as_count(usage.get("prompt_tokens")),
            as_count(usage.get("completion_tokens")),
        )
        if prompt is None or completion is None:
            return None
        return prompt, completion

    def stream_event(self, event: Any, into: StreamTally) -> None:
        if not isinstance(event, dict):
            return
        found = self.usage(event)
        if found is not None:
            into.input_tokens, into.output_tokens = found
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        into.chars += len(text)
                        into.deltas += 1
