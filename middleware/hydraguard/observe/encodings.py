"""Content codings: which ones hydraguard reads, and keeping responses in them.

Usage in a body we cannot decode cannot be read, and charging the compressed size would
under-count the output several times over (br and zstd shrink text 4-5x): a client
asking for ``Accept-Encoding: br`` would get that much more quota. So on routes whose
usage is read, the request's Accept-Encoding is narrowed to the codings the standard
library decodes (gzip, deflate); a response in any other coding keeps its reservation
(``UsageReader.output_estimate``).

Hand-written: a few lines over RFC 9110, 12.5.3; the maintained parsers of Accept
headers come with web frameworks (werkzeug, django), not as a library of their own.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import MutableMapping
from typing import Any

__all__ = ["READABLE", "decoder_for", "readable_accept_encoding"]

READABLE = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})
_DECODED = (b"gzip", b"deflate")  # what a wildcard is narrowed to
_ACCEPT = b"accept-encoding"


def readable_accept_encoding(scope: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``scope``, or a copy whose Accept-Encoding names only codings we decode.

    All lines of the header count (a list header: an upstream joins them). A wildcard with
    a weight becomes gzip and deflate with that weight; codings we cannot decode are dropped;
    when nothing is left the request asks for ``identity``.
    """
    lines = [value for name, value in scope["headers"] if name.lower() == _ACCEPT]
    if not lines:
        return scope
    narrowed = _narrow(b", ".join(lines))
    if narrowed is None:
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != _ACCEPT]
    headers.append((_ACCEPT, narrowed))
    return {**scope, "headers": headers}


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct values
def _narrow(value: bytes) -> bytes | None:
    kept: list[bytes] = []
    named: set[bytes] = set()
    wildcards: list[bytes] = []
    changed = False
    for element in value.split(b","):
        element = element.strip()
        if not element:
            continue
        name, _, params = element.partition(b";")
        name = name.strip().lower()
        if name in READABLE:
            kept.append(element)
            named.add(name)
        elif name == b"*" and not _refused(params):
            wildcards.append(params)
            changed = True
        elif name == b"*":
            kept.append(element)  # "*;q=0": refuses whatever is not named; harmless
        else:
            changed = True  # br, zstd, compress...: we could not read the response
    if not changed:
        return None
    if wildcards:  # codings named elsewhere keep their own weight
        params = wildcards[0]
        kept.extend(
            coding + (b";" + params if params else b"")
            for coding in _DECODED
            if coding not in named
        )
    return b", ".join(kept) if kept else b"identity"


def _refused(params: bytes) -> bool:
    """A weight of zero (``q=0``, ``q=0.000``): the coding is not acceptable."""
    for param in params.split(b";"):
        key, _, weight = param.partition(b"=")
        if key.strip().lower() == b"q":
            try:
                return float(weight) == 0.0
            except ValueError:
                return False
    return False


def decoder_for(encoding: bytes) -> Any:
    """A zlib decompressor for a readable coding, ``None`` for identity.

    gzip and zlib-wrapped deflate share one auto-detecting decompressor; raw deflate (no
    zlib header, as some servers send for ``deflate``) is handled by :class:`_Deflate`.
    """
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)
    if encoding == b"deflate":
        return _Deflate()
    return None


class _Deflate:
    """``deflate`` as servers really send it: zlib-wrapped (RFC 9110) or raw (RFC 1951).

    The first two bytes tell: a zlib header is ``CM=8`` with a checksum divisible by 31
    (raw data that only looks like one fails at once and is read raw, as httpx does).
    Same interface as a zlib decompressor (``decompress(data, max_length)``,
    ``unconsumed_tail``), so the reader does not care which it has.
    """

    __slots__ = ("_head", "_inner")

    def __init__(self) -> None:
        self._head = b""
        self._inner: Any = None

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            if data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
                self._inner = zlib.decompressobj(zlib.MAX_WBITS)
                try:
                    return self._inner.decompress(data, max_length)  # type: ignore[no-any-return]
                except zlib.error:
                    pass  # raw data that happened to look like a zlib header (1 in ~500)
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)  # type: ignore[no-any-return]
