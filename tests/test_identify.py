"""Identity: trusted-proxy matching (a table, as uvicorn tests its proxy headers),
account sources in order, API-key hashing and tier fallback."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from hydraguard.identify import (
    MAX_ACCOUNT_CHARS,
    Identifier,
    ProxyMatcher,
    decode_headers,
    hash_api_key,
)

MATCHER = ProxyMatcher(
    tuple(
        ipaddress.ip_network(n, strict=False) for n in ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]
    )
)


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.255.0.1", True),
        ("11.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::1", False),
        ("not-an-ip", False),
        ("", False),
        ("10.0.0.1:8080", False),
        ("::ffff:127.0.0.1", True),  # an IPv4 peer as a dual-stack socket reports it
        ("::ffff:10.1.2.3", True),
        ("::ffff:11.0.0.1", False),
    ],
)
def test_proxy_matcher_table(host: str, trusted: bool) -> None:
    assert (host in MATCHER) is trusted
    assert (host in MATCHER) is trusted  # cached answer agrees


def test_decode_headers_is_latin1_and_lower_case() -> None:
    assert decode_headers([(b"X-Account-ID", b"\xff\x00a")]) == {"x-account-id": "\xff\x00a"}


def test_api_key_hash_is_stable_and_hides_the_key() -> None:
    assert hash_api_key("sk-1") == hash_api_key("sk-1") != hash_api_key("sk-2")
    assert "sk-1" not in hash_api_key("sk-1") and len(hash_api_key("sk-1")) == 4 + 24


POLICY = """
name: ident
identity:
  account:
    - header: X-Account-Id
    - state: user_id
    - api_key: true
    - client_ip: true
  tier:
    header: x-account-tier
tiers:
  default: {}
  pro: {}
"""


@pytest.mark.parametrize(
    ("headers", "state", "client", "account", "tier"),
    [
        ({"x-account-id": "a1", "x-account-tier": "pro"}, {}, ("1.2.3.4", 1), "a1", "pro"),
        ({"x-account-tier": "gold"}, {"user_id": 42}, ("1.2.3.4", 1), "42", "default"),
        (
            {"authorization": "Bearer   sk-abc "},
            {},
            ("1.2.3.4", 1),
            hash_api_key("sk-abc"),
            "default",
        ),
        ({"authorization": "Basic xyz", "x-api-key": "k"}, {}, None, hash_api_key("k"), "default"),
        ({"authorization": "Bearer "}, {}, ("1.2.3.4", 1), "ip-1.2.3.4", "default"),
        ({}, {}, None, "anonymous", "default"),
    ],
)
def test_account_sources_in_order(
    kit: SimpleNamespace, headers, state, client, account, tier
) -> None:
    identifier = Identifier(kit.compile_yaml(POLICY))
    scope = {"client": client, "state": state, "headers": []}
    identity = identifier.identify(scope, headers)
    assert (identity.account, identity.tier) == (account, tier)


def test_the_first_line_of_a_repeated_header_wins_as_in_starlette() -> None:
    from starlette.datastructures import Headers

    raw = [(b"x-account-id", b"first"), (b"X-Account-Id", b"second"), (b"x-org-id", b"o")]
    assert decode_headers(raw)["x-account-id"] == "first" == Headers(raw=raw)["x-account-id"]
    assert decode_headers(raw)["x-org-id"] == "o"


def test_x_forwarded_for_lines_are_one_list_in_order(kit: SimpleNamespace) -> None:
    # A client's own line first, then the hop our trusted proxy added on a line of its own:
    # the client is the proxy's hop, not the address the client wrote.
    raw = [(b"x-forwarded-for", b"6.6.6.6"), (b"X-Forwarded-For", b"203.0.113.7")]
    headers = decode_headers(raw)
    assert headers["x-forwarded-for"] == "6.6.6.6, 203.0.113.7"
    policy = kit.compile_yaml(
        POLICY.replace("identity:\n", "identity:\n  trusted_proxies: ['127.0.0.1']\n")
    )
    identity = Identifier(policy).identify({"client": ("127.0.0.1", 1), "headers": raw}, headers)
    assert identity.client_ip == "203.0.113.7"


def test_a_long_account_id_becomes_a_bounded_digest(kit: SimpleNamespace) -> None:
    identifier = Identifier(kit.compile_yaml(POLICY))
    scope = {"client": None, "state": {}, "headers": []}
    exact = identifier.identify(scope, {"x-account-id": "a" * MAX_ACCOUNT_CHARS}).account
    assert exact == "a" * MAX_ACCOUNT_CHARS
    long_a = identifier.identify(scope, {"x-account-id": "a" * 60_000}).account
    long_b = identifier.identify(scope, {"x-account-id": "a" * 59_999 + "b"}).account
    assert long_a.startswith("long-") and len(long_a) == 5 + 24
    assert long_a != long_b  # distinct ids stay distinct accounts
    assert long_a == identifier.identify(scope, {"x-account-id": "a" * 60_000}).account


PROXIED = """
name: proxied
identity:
  account:
    - client_ip: true
  trusted_proxies: ["127.0.0.1", "10.0.0.0/8"]
tiers:
  default: {}
"""


@pytest.mark.parametrize(
    ("peer", "lines", "account"),
    [
        pytest.param("10.0.0.2", [b"198.51.100.7, 10.0.0.1"], "ip-198.51.100.7", id="one-line"),
        pytest.param(
            "10.0.0.2", [b"198.51.100.7", b"10.0.0.1"], "ip-198.51.100.7", id="a-line-per-proxy"
        ),
        pytest.param(
            "10.0.0.2", [b"6.6.6.6", b"198.51.100.7"], "ip-198.51.100.7", id="spoofed-first-line"
        ),
        pytest.param("::ffff:127.0.0.1", [b"198.51.100.7"], "ip-198.51.100.7", id="v4-mapped-peer"),
        pytest.param("203.0.113.9", [b"198.51.100.7"], "ip-203.0.113.9", id="untrusted-peer"),
        pytest.param("10.0.0.2", [b""], "ip-10.0.0.2", id="empty"),
    ],
)
def test_forwarded_for_lines_from_trusted_proxies(
    kit: SimpleNamespace, peer: str, lines: list[bytes], account: str
) -> None:
    identifier = Identifier(kit.compile_yaml(PROXIED))
    raw = [(b"X-Forwarded-For", line) for line in lines]
    scope = {"client": (peer, 1), "state": {}, "headers": raw}
    assert identifier.identify(scope, decode_headers(raw)).account == account
