"""OpenAI chat completions (and legacy completions, ``prompt``): request fields, error envelope,
usage (JSON and final stream chunk)."""

from __future__ import annotations

import json
from typing import Any

from .dialect import Dialect, StreamTally
from .facts import RequestFacts, as_count, param_flag, param_float, param_int, text_of

_ERROR_TYPES = {429: "rate_limit_error"}  # else 4xx: invalid_request_error, 5xx: server_error


class OpenAIChat(Dialect):
    name = "openai-chat"
    reads_body = True
    cap_keys: tuple[str, ...] = ("max_completion_tokens", "max_tokens")
    asks_stream_usage = True  # stream_options.include_usage: the final chunk carries usage
    openai_headers = True  # x-ratelimit-* as OpenAI sends them
    usage_keys = ("prompt_tokens", "completion_tokens")  # in a response's "usage"

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        messages = body.get("messages")
        texts: list[str] = []
        nested: list[str] = []
        count = 0
        tokens = 0
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    count += 1
                    texts.append(text_of(message.get("content"), nested))
                    if "tool_calls" in message or "function_call" in message:
                        nested += _call_arguments(message)
        completions = "prompt" in body and not isinstance(messages, list)
        if completions:  # legacy completions: the same API family, a prompt instead
            tokens = _prompt(body.get("prompt"), texts)
            suffix = body.get("suffix")
            if isinstance(suffix, str):
                texts.append(suffix)
        max_tokens = param_int(body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = param_int(body.get("max_tokens"))
        top = param_int(body.get("top_logprobs"))
        logprobs = body.get("logprobs")
        if logprobs is not None and logprobs is not True and logprobs is not False:
            # Completions take the number of top tokens ("logprobs": 5), and even 0 returns
            # the sampled tokens' logprobs (with "echo", the prompt's); in chat a lax
            # upstream reads 1 and "true" as true, 0 as false.
            wanted = param_int(logprobs)
            if wanted:
                top = max(top or 0, wanted)
            logprobs = param_flag(logprobs) or bool(wanted) or (completions and wanted == 0)
        if "prompt_logprobs" in body:  # vLLM: the logprobs of the prompt's own tokens
            wanted = param_int(body["prompt_logprobs"])
            if wanted is not None:
                logprobs = True
                if wanted:
                    top = max(top or 0, wanted)
        model = body.get("model")
        # Positional, in field order: keyword arguments cost twice as much (per request).
        return RequestFacts(
            body,
            "\n".join(texts),  # prompt
            count,  # messages
            max_tokens,
            param_flag(body.get("stream")),  # stream
            max(param_int(body.get("n")) or 1, 1),  # n
            logprobs is True or bool(top),  # logprobs
            top,  # top_logprobs
            bool(body.get("logit_bias")),  # logit_bias
            param_float(body.get("temperature")),  # temperature
            model if isinstance(model, str) else None,  # model
            sum(map(len, nested)),  # extra_chars
            tokens,  # prompt_tokens
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
        given, produced = self.usage_keys
        prompt, completion = as_count(usage.get(given)), as_count(usage.get(produced))
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
                if isinstance(choice, dict):
                    delta = choice.get("delta")
                    if isinstance(delta, dict):
                        _tally_delta(delta, into)
                    else:  # legacy completions stream their text in the choice
                        tally_text(choice.get("text"), into)


def _call_arguments(message: dict[str, Any]) -> list[str]:
    """The arguments of an assistant message's tool and function calls: input too."""
    calls = message.get("tool_calls")
    functions = (
        [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    )
    functions.append(message.get("function_call"))  # the legacy single call
    return [
        f["arguments"]
        for f in functions
        if isinstance(f, dict) and isinstance(f.get("arguments"), str)
    ]


def _prompt(prompt: Any, texts: list[str]) -> int:
    """Add a completions prompt's text to ``texts``; return how many tokens it gives as ids.

    The prompt is a string, a list of strings, a list of token ids or a list of such lists.
    """
    if isinstance(prompt, str):
        texts.append(prompt)
        return 0
    if not isinstance(prompt, list):
        return 0
    tokens = 0
    for item in prompt:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):
            tokens += len(item)
        elif isinstance(item, int):
            tokens += 1
    return tokens


def _tally_delta(delta: dict[str, Any], into: StreamTally) -> None:
    """Streamed output of one chunk: the answer, and what also costs output tokens when the
    upstream sends no usage: reasoning (``reasoning_content`` of vLLM and DeepSeek,
    ``reasoning`` of OpenRouter), tool-call arguments and refusals."""
    for field in _DELTA_TEXTS:
        tally_text(delta.get(field), into)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                tally_text(function.get("arguments"), into)


_DELTA_TEXTS = ("content", "reasoning_content", "reasoning", "refusal")


def tally_text(text: Any, into: StreamTally) -> None:
    if isinstance(text, str) and text:
        into.chars += len(text)
        into.deltas += 1
