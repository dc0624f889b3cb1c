"""URLs shown in logs, banners and errors never carry a password."""

from __future__ import annotations

import pytest

from hydraguard.errors import StorageError
from hydraguard.gateway.app import GatewayConfig
from hydraguard.gateway.serve import banner
from hydraguard.storage.factory import storage_from_uri
from hydraguard.urls import shown


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("memory://", "memory://"),
        ("redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        ("rediss://user:s3cret@host:6380", "rediss://user:***@host:6380"),
        ("redis://user@host:6379", "redis://user@host:6379"),
        (
            "redis+sentinel://:s3cret@h1:26379,h2:26379/mymaster",
            "redis+sentinel://:***@h1:26379,h2:26379/mymaster",
        ),
        (
            "redis://host:6379/0?password=s3cret&db=1",
            "redis://host:6379/0?password=***&db=1",
        ),
        ("https://k:s3cret@api.example.com/v1", "https://k:***@api.example.com/v1"),
        ("redis://[::1:6379", "redis://***"),  # unparseable: nothing of it shown
    ],
)
def test_shown_hides_passwords(url: str, expected: str) -> None:
    assert shown(url) == expected
    assert "s3cret" not in shown(url)


def test_redis_storage_never_shows_its_password() -> None:
    storage = storage_from_uri("redis://:s3cret@127.0.0.1:1/0", timeout=0.05)
    assert storage.uri == "redis://:***@127.0.0.1:1/0"
    with pytest.raises(StorageError) as refused:
        storage_from_uri("mongodb://:s3cret@host/0")
    assert "s3cret" not in str(refused.value)


def test_the_serve_banner_hides_storage_and_upstream_passwords() -> None:
    config = GatewayConfig(
        policy=None,
        storage="redis://:s3cret@10.0.0.5:6379/0",
        upstream="https://k:s3cret@api.example.com/v1",
    )
    text = banner(config, "127.0.0.1", 8000, 2)
    assert "s3cret" not in text
    assert "redis://:***@10.0.0.5:6379/0" in text and "https://k:***@api.example.com" in text
