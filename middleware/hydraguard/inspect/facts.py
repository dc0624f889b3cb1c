"""What a dialect learns from a request body, and the documented token estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestFacts:
    """Dialects build it with positional arguments (cheaper): keep the field order."""

    body: dict[str, Any] | None  # the parsed JSON body (None for generic routes)
    prompt: str = ""  # all prompt text (system + messages), for estimates and detectors
    messages: int = 0
    max_tokens: int | None = None  # as requested (max_tokens or max_completion_tokens)
    stream: bool = False
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None
    logit_bias: bool = False
    temperature: float | None = None
    model: str | None = None


def estimate_input_tokens(facts: RequestFacts, chars_per_token: float, per_message: int) -> int:
    """Input tokens before the upstream counts them: characters / chars_per_token, plus a
    per-message overhead for role and framing. Documented in the README: ~4 characters per
    token is the usual rule of thumb for English on BPE tokenizers; no tokenizer download."""
    return max(1, math.ceil(len(facts.prompt) / chars_per_token) + per_message * facts.messages)


def as_int(value: Any) -> int | None:
    kind = type(value)
    if kind is int:  # the usual case first: an exact type test is the cheapest
        return value if value >= 0 else None  # type: ignore[no-any-return]
    if kind is bool or not isinstance(value, NUMBERS):
        return None
    return int(value) if value >= 0 else None


NUMBERS = (int, float)

# No real response comes near this many tokens, and beyond it a double (Redis' and Lua's
# numbers) no longer holds every integer: a larger "count" is garbage, not usage.
MAX_COUNT = 1 << 53


def as_count(value: Any) -> int | None:
    """A token count from an upstream's ``usage``: a non-negative number up to MAX_COUNT,
    else None (then the no-usage rule applies)."""
    count = as_int(value)
    return count if count is not None and count <= MAX_COUNT else None


def text_of(content: Any) -> str:
    """Text of a message content: a string, or a list of parts with a ``text`` field."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
