"""Header rules of the proxy and the default error envelopes, as tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hydraguard.gateway.envelopes import default_error_response
from hydraguard.gateway.headers import end_to_end, upstream_request_headers


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ([(b"Connection", b"close"), (b"X-A", b"1")], [(b"x-a", b"1")]),
        ([(b"keep-alive", b"5"), (b"te", b"trailers"), (b"trailer", b"x")], []),
        ([(b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c")], []),
        ([(b"proxy-authenticate", b"x"), (b"proxy-authorization", b"y")], []),
        (
            [
                (b"connection", b"X-Foo , x-bar"),
                (b"x-foo", b"1"),
                (b"X-Bar", b"2"),
                (b"x-baz", b"3"),
            ],
            [(b"x-baz", b"3")],
        ),
        (
            [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
            [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
        ),
        (
            [(b"content-encoding", b"gzip"), (b"content-length", b"10")],
            [(b"content-encoding", b"gzip"), (b"content-length", b"10")],
        ),
    ],
)
def test_end_to_end(headers: list[tuple[bytes, bytes]], kept: list[tuple[bytes, bytes]]) -> None:
    assert end_to_end(headers) == kept


def scope(
    headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None = ("10.0.0.9", 5)
) -> dict[str, Any]:
    return {"headers": headers, "client": client, "scheme": "https"}


@pytest.mark.parametrize(
    ("incoming", "client", "expected"),
    [
        ([], ("10.0.0.9", 5), b"10.0.0.9"),
        ([(b"x-forwarded-for", b"1.1.1.1")], ("10.0.0.9", 5), b"1.1.1.1, 10.0.0.9"),
        (
            [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")],
            ("10.0.0.9", 5),
            b"1.1.1.1, 2.2.2.2, 10.0.0.9",
        ),
        ([(b"x-forwarded-for", b"1.1.1.1")], None, b"1.1.1.1"),
        ([], None, None),
    ],
)
def test_x_forwarded_for_appends_client(
    incoming: list[tuple[bytes, bytes]], client: tuple[str, int] | None, expected: bytes | None
) -> None:
    headers = upstream_request_headers(scope(incoming, client), keep_length=True)
    assert [v for k, v in headers if k == b"x-forwarded-for"] == ([expected] if expected else [])


def test_forwarded_proto_and_host_set_only_when_absent() -> None:
    fresh = dict(upstream_request_headers(scope([(b"host", b"api.example")]), keep_length=True))
    assert (fresh[b"x-forwarded-proto"], fresh[b"x-forwarded-host"]) == (b"https", b"api.example")
    assert b"host" not in fresh
    prior = [
        (b"host", b"api.example"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"edge"),
    ]
    kept = upstream_request_headers(scope(prior), keep_length=True)
    assert [v for k, v in kept if k == b"x-forwarded-proto"] == [b"http"]
    assert [v for k, v in kept if k == b"x-forwarded-host"] == [b"edge"]


@pytest.mark.parametrize(("keep", "present"), [(True, True), (False, False)])
def test_content_length_kept_only_for_relayed_bodies(keep: bool, present: bool) -> None:
    headers = upstream_request_headers(scope([(b"content-length", b"12")]), keep_length=keep)
    assert (b"content-length" in dict(headers)) is present


@pytest.mark.parametrize(
    ("path", "status", "media", "shape"),
    [
        (
            "/v1/messages",
            504,
            "application/json",
            {"type": "error", "error": {"type": "timeout_error", "message": "m"}},
        ),
        (
            "/api/v1/messages/",
            502,
            "application/json",
            {"type": "error", "error": {"type": "api_error", "message": "m"}},
        ),
        (
            "/v1/chat/completions",
            502,
            "application/json",
            {"error": {"message": "m", "type": "server_error", "param": None, "code": None}},
        ),
        (
            "/v1/completions",
            400,
            "application/json",
            {
                "error": {
                    "message": "m",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "/v1/models",
            504,
            "application/problem+json",
            {"type": "about:blank", "title": "Gateway Timeout", "status": 504, "detail": "m"},
        ),
    ],
)
def test_default_error_response(path: str, status: int, media: str, shape: dict[str, Any]) -> None:
    response = default_error_response(path, status, "m")
    assert response.status_code == status
    assert response.media_type == media
    assert json.loads(bytes(response.body)) == shape
