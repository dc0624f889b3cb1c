"""What the mock model says: request parsing, prompt token count and a deterministic reply.

Token accounting of the mock (exact for what it sends):

* prompt tokens = whitespace-separated words of the system prompt plus the text of
  every message content (string contents, or the ``text`` of text parts/blocks);
* completion tokens = words of the reply; one streamed delta carries one word.

The reply is drawn from a fixed word list with ``random.Random`` seeded by the SHA-256
of the prompt (and the choice index), so the same request always gets the same text.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from ..inspect.facts import text_of

MOCK_MODEL = "hydraguard-mock"
MIN_REPLY_TOKENS = 20
MAX_REPLY_TOKENS = 200

_WORDS = (
    "the model considers your request and answers with care while each step follows "
    "from the previous one so that reasoning stays clear and the result remains useful "
    "data shows patterns across many examples because language carries structure "
    "we observe measure compare infer explain summarise verify and conclude quickly "
    "therefore however moreover meanwhile finally first second third"
).split()


class BadRequest(Exception):
    """The request body does not fit the API; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Reply:
    words: tuple[str, ...]
    cut: bool  # stopped by max_tokens before its natural end

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def pieces(self) -> list[str]:
        """The streamed deltas: one word each, joined they give ``text``."""
        return [word if i == 0 else f" {word}" for i, word in enumerate(self.words)]


def generate(prompt: str, max_tokens: int | None, choice: int = 0) -> Reply:
    digest = hashlib.sha256(f"{choice}\x00{prompt}".encode()).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    natural = rng.randint(MIN_REPLY_TOKENS, MAX_REPLY_TOKENS)
    length = natural if max_tokens is None else min(max_tokens, natural)
    words = tuple(rng.choice(_WORDS) for _ in range(length))
    return Reply(words=words, cut=length < natural)


def count_tokens(text: str) -> int:
    return len(text.split())


# The same reading of message content as the middleware's dialects.
content_text = text_of


def prompt_text(body: dict[str, Any], *, system_field: bool) -> str:
    """All prompt text of a chat request; ``system_field`` for Anthropic's top-level system."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty array of message objects is required", "messages")
    parts = [content_text(body.get("system"))] if system_field else []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages.{index}: must be an object", f"messages.{index}")
        parts.append(content_text(message.get("content")))
    return "\n".join(part for part in parts if part)


def positive_int(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name}: Field required", name)
        return None
    # bool is an int subclass; JSON true is not a token count
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{name}: must be an integer >= 1", name)
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name}: must be a boolean", name)
    return value


def model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else MOCK_MODEL
