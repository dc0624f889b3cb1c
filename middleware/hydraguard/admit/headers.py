"""Rate-limit response headers: IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-
ratelimit-headers, structured fields) on every response of a limited route, and the
OpenAI-style ``x-ratelimit-*`` family on openai-chat routes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..policy.compiled import ConcurrencyLimit, WindowLimit
from ..storage.base import Check, Verdict

Limit = WindowLimit | ConcurrencyLimit


def policy_header(limits: Sequence[Limit]) -> bytes:
    items = []
    for limit in limits:
        if isinstance(limit, WindowLimit):
            unit = "" if limit.kind == "requests" else ';qu="tokens"'
            items.append(f'"{limit.rule}";q={limit.amount};w={limit.window}{unit}')
        else:
            items.append(f'"{limit.rule}";q={limit.amount};qu="concurrent-requests"')
    return ", ".join(items).encode()


def go_duration(seconds: float) -> str:
    """OpenAI writes resets like ``1s``, ``6m0s``, ``1h2m3s``."""
    whole = max(0, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ratelimit_headers(
    limits: Sequence[Limit], checks: Sequence[Check], verdict: Verdict, openai: bool
) -> list[tuple[bytes, bytes]]:
    items = []
    binding: dict[str, tuple[int, int, float]] = {}  # kind -> (limit, remaining, reset)
    for limit, check, used, reset in zip(limits, checks, verdict.usage, verdict.reset, strict=True):
        remaining = max(0, math.floor(check.limit - used))
        if check.window:
            items.append(f'"{limit.rule}";r={remaining};t={math.ceil(reset)}')
            if openai and not check.shadow:
                kind = limit.kind  # type: ignore[union-attr]
                best = binding.get(kind)
                if best is None or remaining < best[1]:
                    binding[kind] = (check.limit, remaining, reset)
        else:
            items.append(f'"{limit.rule}";r={remaining}')
    out = [(b"ratelimit", ", ".join(items).encode())]
    for kind, (amount, remaining, reset) in binding.items():
        out.append((f"x-ratelimit-limit-{kind}".encode(), str(amount).encode()))
        out.append((f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()))
        out.append((f"x-ratelimit-reset-{kind}".encode(), go_duration(reset).encode()))
    return out
