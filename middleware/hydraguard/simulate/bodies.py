"""Request bodies in the OpenAI chat-completions and Anthropic messages dialects, the
plausible ``usage`` of the answer, and the traffic-log record around them.
"""

from __future__ import annotations

import math
import random
from typing import Any

from hydraguard.simulate.accounts import Account

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
MODELS = {
    "openai": ("gpt-4o", "gpt-4o", "gpt-4o-mini", "o3-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"),
}
# Anthropic requires max_tokens; this is what SDK examples (and so most callers) send.
ANTHROPIC_DEFAULT_MAX = 1024
# The answer-length ceiling when an OpenAI caller sends no max_tokens.
OPENAI_DEFAULT_CAP = 4096


def body(
    dialect: str,
    model: str,
    messages: list[dict[str, Any]],
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    stream: bool = False,
    tools: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model}
    if dialect == "openai":
        out["messages"] = [{"role": "system", "content": system}, *messages] if system else messages
        if max_tokens is not None:
            out["max_tokens"] = max_tokens
    else:
        out["max_tokens"] = ANTHROPIC_DEFAULT_MAX if max_tokens is None else max_tokens
        if system:
            out["system"] = system
        out["messages"] = messages
    if temperature is not None:
        out["temperature"] = temperature
    if tools:
        out["tools"] = tools
    if extra:
        out.update(extra)
    if stream:
        out["stream"] = True
        if dialect == "openai":
            out["stream_options"] = {"include_usage": True}
    return out


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def input_tokens(request: dict[str, Any]) -> int:
    """About one token per four characters of text, plus a few per message for framing."""
    chars = _chars(request.get("system")) + _chars(request.get("tools"))
    for message in request["messages"]:
        content = message["content"]
        # Plain-text content is the common case; only tool exchanges need the walk.
        chars += len(content) if type(content) is str else _chars(message)
    return max(1, math.ceil(chars / 4)) + 4 * len(request["messages"])


def output_cap(request: dict[str, Any]) -> int:
    cap = request.get("max_tokens") or OPENAI_DEFAULT_CAP
    return int(cap) * int(request.get("n", 1))


def answer_length(rng: random.Random, median: float, sigma: float = 0.7) -> int:
    """A log-normal answer length: most answers near the median, a long tail."""
    return max(1, round(rng.lognormvariate(math.log(median), sigma)))


def record(
    ts: float,
    account: Account,
    ip: str,
    dialect: str,
    request: dict[str, Any],
    output: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "ts": round(ts, 3),
        "account": account.id,
        "ip": ip,
        "headers": dict(headers if headers is not None else account.headers),
        "method": "POST",
        "path": PATHS[dialect],
        "body": request,
        "status": 200,
        "usage": {
            "input_tokens": input_tokens(request),
            "output_tokens": max(1, min(output, output_cap(request))),
        },
    }
