"""URLs as they may be shown in logs, banners and errors: credentials hidden."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = frozenset({"password", "sentinel_password", "token", "api_key"})


def shown(url: str) -> str:
    """``url`` with any password (``redis://:pw@host``, ``?password=pw``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show nothing of it that could be secret
        return url.split("://", 1)[0] + "://***"
    netloc, query = parts.netloc, parts.query
    if password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name in _SECRET_PARAMS for name, _ in pairs):
            query = urlencode(
                [(n, "***" if n in _SECRET_PARAMS else v) for n, v in pairs], safe="*"
            )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
