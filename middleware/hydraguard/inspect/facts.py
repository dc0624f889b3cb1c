"""What a dialect learns from a request body, and the documented token estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError


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
    # Input the detectors do not read, counted in the estimate: tool results, documents and
    # tool-call arguments (data that varies from call to call, not the client's template:
    # in the prompt it hid the template repetition of agent traffic) and token-id prompts.
    extra_chars: int = 0
    prompt_tokens: int = 0
    # A batch: each entry's max_tokens (0 for an entry without one), which ``max_tokens``
    # sums; a cap applies to each. Empty for a single request.
    entry_max_tokens: tuple[int, ...] = ()
    # A batch: a sample of its entries, the first of which this request's prompt, model and
    # parameters are; the detectors read each (``assess.learning``). Empty for one request.
    entries: tuple[RequestFacts, ...] = ()


def capped_max_tokens(facts: RequestFacts, cap: int, ceiling: int) -> int:
    """The output a request asks for once a ``cap_max_tokens`` action rewrote it (see
    ``Dialect.cap``): a request that did not say gets the cap, its ``ceiling`` when lower;
    a batch, the sum of its entries each capped."""
    if facts.entry_max_tokens:
        return sum(min(asked, cap) for asked in facts.entry_max_tokens)
    return min(facts.max_tokens if facts.max_tokens is not None else ceiling, cap)


def estimate_input_tokens(facts: RequestFacts, chars_per_token: float, per_message: int) -> int:
    """Input tokens before the upstream counts them: characters / chars_per_token, plus a
    per-message overhead for role and framing, plus any prompt sent as token ids. Tool
    results, documents and tool-call arguments count as characters too. Documented in the README: ~4 characters per
    token is the usual rule of thumb for English on BPE tokenizers; no tokenizer download."""
    return max(
        1,
        math.ceil((len(facts.prompt) + facts.extra_chars) / chars_per_token)
        + per_message * facts.messages
        + facts.prompt_tokens,
    )


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


def text_of(content: Any, nested: list[str] | None = None) -> str:
    """Text of a message content: a string, or a list of parts with a ``text`` field.

    With ``nested``, the text parts hold deeper is added to it, since the model reads it
    too: a tool result's ``content`` (Anthropic ``tool_result``, ``search_result``) and a
    document's text (``source`` of type ``text``: ``data``; of type ``content``: its parts).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif nested is not None:
            _nested_text(part, nested, 0)
    return "\n".join(texts)


def _nested_text(part: dict[str, Any], into: list[str], depth: int) -> None:
    inner = part.get("content")
    if inner is None:
        source = part.get("source")
        if isinstance(source, dict):
            inner = source.get("data") if source.get("type") == "text" else source.get("content")
    if isinstance(inner, str):
        into.append(inner)
    elif isinstance(inner, list) and depth < _MAX_DEPTH:
        for item in inner:
            if isinstance(item, dict):
                text = item.get("text")
                if isinstance(text, str):
                    into.append(text)
                else:
                    _nested_text(item, into, depth + 1)


_MAX_DEPTH = 2  # a tool result in a document is followed, nothing deeper


# What pydantic-based upstreams (vLLM, SGLang, LiteLLM) accept for a request parameter in
# lax mode: "10" is 10, "true", "yes" and 1 are true. Reading fewer spellings than the
# upstream would let a client hide max_tokens=1, logprobs or a stream from hydraguard.
_LAX_INT: TypeAdapter[int] = TypeAdapter(int)
_LAX_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_LAX_FLOAT: TypeAdapter[float] = TypeAdapter(float)


def _lax(adapter: TypeAdapter[Any], value: Any) -> Any:
    """``value`` as ``adapter`` reads it in lax mode, or None when it cannot."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def param_int(value: Any) -> int | None:
    """A non-negative integer request parameter, numeric strings included; else None."""
    return as_int(_lax(_LAX_INT, value) if type(value) is str else value)


def param_flag(value: Any) -> bool:
    """A boolean request parameter as a lax upstream reads it; anything else is false."""
    if value is True or value is False or value is None:
        return value is True
    return _lax(_LAX_BOOL, value) is True


def param_float(value: Any) -> float | None:
    """A finite number (temperature), numeric strings included; else None."""
    if type(value) is str:
        value = _lax(_LAX_FLOAT, value)
    if not isinstance(value, NUMBERS):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
