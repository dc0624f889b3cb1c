"""Turn a storage URI into a storage object."""

from __future__ import annotations

from ..errors import StorageError
from ..urls import shown
from .base import Storage


def storage_from_uri(
    uri: str | Storage, *, sliding: bool = True, timeout: float | None = None
) -> Storage:
    if isinstance(uri, Storage):
        return uri
    scheme = uri.split("://", 1)[0]
    if scheme == "memory":
        from .memory import MemoryStorage

        return MemoryStorage(uri, sliding=sliding)
    if scheme.startswith(("redis", "rediss")):
        from .redis import RedisStorage

        return RedisStorage(uri, sliding=sliding, timeout=timeout)
    raise StorageError(
        f"unknown storage {shown(uri)!r}: use memory:// or a Redis URL "
        "(redis://host:6379/0, rediss://, redis+sentinel://, redis+cluster://)"
    )
