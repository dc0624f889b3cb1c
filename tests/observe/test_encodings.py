"""Accept-Encoding narrowed to the codings whose bodies hydraguard can read."""

from __future__ import annotations

import pytest

from hydraguard.observe.encodings import readable_accept_encoding


def scope_with(*values: bytes) -> dict[str, object]:
    headers = [(b"host", b"api"), *((b"accept-encoding", v) for v in values), (b"x-a", b"1")]
    return {"type": "http", "headers": headers}


def accepted(scope: dict[str, object]) -> list[bytes]:
    return [v for k, v in scope["headers"] if k == b"accept-encoding"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [b"gzip, deflate", b"gzip;q=1.0, identity; q=0.5", b"identity", b"GZIP", b"gzip, *;q=0"],
)
def test_readable_codings_leave_the_request_untouched(value: bytes) -> None:
    scope = scope_with(value)
    assert readable_accept_encoding(scope) is scope


@pytest.mark.parametrize(
    ("values", "narrowed"),
    [
        ((b"gzip, deflate, br, zstd",), b"gzip, deflate"),  # the openai/httpx SDKs' value
        ((b"br",), b"identity"),
        ((b"br;q=1.0, gzip;q=0.8, *;q=0.1",), b"gzip;q=0.8, deflate;q=0.1"),
        ((b"*",), b"gzip, deflate"),
        ((b"gzip;q=0, *",), b"gzip;q=0, deflate"),  # a coding refused by name stays refused
        ((b"zstd", b"deflate"), b"deflate"),  # every line counts
        ((b" , br ,",), b"identity"),
    ],
)
def test_other_codings_are_dropped(values: tuple[bytes, ...], narrowed: bytes) -> None:
    scope = scope_with(*values)
    out = readable_accept_encoding(scope)
    assert accepted(out) == [narrowed]
    assert [k for k, _ in out["headers"]][:2] == [b"host", b"x-a"]  # type: ignore[index]
    assert accepted(scope) == list(values)  # the caller's scope is not modified


def test_no_accept_encoding_means_no_change() -> None:
    scope = {"type": "http", "headers": [(b"host", b"api")]}
    assert readable_accept_encoding(scope) is scope
