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
    text = _DURATIONS.get(whole)
    if text is None:
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        if hours:
            text = f"{hours}h{minutes}m{secs}s"
        elif minutes:
            text = f"{minutes}m{secs}s"
        else:
            text = f"{secs}s"
        if len(_DURATIONS) < 100_000:  # a day of distinct seconds; beyond that, compute
            _DURATIONS[whole] = text
    return text


_DURATIONS: dict[int, str] = {}


def ratelimit_headers(
    limits: Sequence[Limit],
    groups: Sequence[tuple[str, tuple[int, ...]]],
    checks: Sequence[Check],
    verdict: Verdict,
    openai: bool,
) -> list[tuple[bytes, bytes]]:
    """``groups``: per kind, the indexes of its enforced checks (``Layout.report_groups``)."""
    usage = verdict.usage
    items = []
    out: list[tuple[bytes, bytes]] = []
    for kind, indexes in groups:
        best = indexes[0]
        room = checks[best].limit - usage[best]
        for i in indexes[1:]:
            other = checks[i].limit - usage[i]
            if other < room:
                best, room = i, other
        remaining = int(room) if room > 0 else 0
        check = checks[best]
        if check.window:
            reset = verdict.reset[best]
            items.append(f'"{limits[best].rule}";r={remaining};t={math.ceil(reset)}')
            if openai:
                names = _OPENAI_NAMES[kind]
                out.append((names[0], b"%d" % check.limit))
                out.append((names[1], b"%d" % remaining))
                out.append((names[2], go_duration(reset).encode()))
        else:
            items.append(f'"{limits[best].rule}";r={remaining}')
    out.append((b"ratelimit", ", ".join(items).encode()))
    return out


def with_ratelimit_headers(
    app_headers: list[tuple[bytes, bytes]], ours: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The app's response headers plus ours. An app's own fields of the same names (an
    upstream model API's ``x-ratelimit-*``: its quota for the whole gateway) are dropped,
    so that a client never reads two conflicting values of one field."""
    if not app_headers:
        return ours
    return [item for item in app_headers if item[0].lower() not in _OURS] + ours


_OPENAI_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}".encode(),
        f"x-ratelimit-remaining-{kind}".encode(),
        f"x-ratelimit-reset-{kind}".encode(),
    )
    for kind in ("requests", "tokens")
}
# Every field we may send: an app's own copies are dropped (with_ratelimit_headers), even
# those we do not send on this route (e.g. x-ratelimit-* on an anthropic-messages route),
# so that no client reads the upstream's quota for the whole gateway as its own.
_OURS = frozenset(
    {b"ratelimit", b"ratelimit-policy", *(n for names in _OPENAI_NAMES.values() for n in names)}
)
