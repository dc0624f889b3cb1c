"""Rate-limit response headers: IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-
ratelimit-headers, structured fields) on every response of a limited route, and the
OpenAI-style ``x-ratelimit-*`` family on openai-chat routes.

RateLimit-Policy lists every limit of the tier; RateLimit reports, per kind (requests,
tokens, concurrency), the limit with the least room left — the one a client must pace to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..policy.compiled import ConcurrencyLimit, WindowLimit
from ..storage.base import Check, Verdict
from .plan import Limit


def policy_header(limits: Sequence[Limit]) -> bytes:
    items = []
    for limit in limits:
        if not isinstance(limit, WindowLimit | ConcurrencyLimit):
            continue
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
    limits: Sequence[Limit], kinds: Sequence[str], checks: Sequence[Check], verdict: Verdict, openai: bool
) -> list[tuple[bytes, bytes]]:
    usage = verdict.usage
    tightest: dict[str, tuple[float, int]] = {}  # kind -> (room, index) of the enforced check with least room
    for i, check in enumerate(checks):
        if check.shadow or check.window < 0:
            continue
        room = check.limit - usage[i]
        best = tightest.get(kinds[i])
        if best is None or room < best[0]:
            tightest[kinds[i]] = (room, i)
    items = []
    out: list[tuple[bytes, bytes]] = []
    for kind, (room, i) in tightest.items():
        remaining = max(0, int(room))
        if checks[i].window:
            reset = verdict.reset[i]
            items.append(f'"{limits[i].rule}";r={remaining};t={math.ceil(reset)}')
            if openai:
                names = _OPENAI_NAMES[kind]
                out.append((names[0], str(checks[i].limit).encode()))
                out.append((names[1], str(remaining).encode()))
                out.append((names[2], go_duration(reset).encode()))
        else:
            items.append(f'"{limits[i].rule}";r={remaining}')
    out.append((b"ratelimit", ", ".join(items).encode()))
    return out


_OPENAI_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}".encode(),
        f"x-ratelimit-remaining-{kind}".encode(),
        f"x-ratelimit-reset-{kind}".encode(),
    )
    for kind in ("requests", "tokens")
}
