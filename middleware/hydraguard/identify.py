"""Step 1 of a request: who is asking — account id, tier, client address, context headers."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .policy.compiled import CompiledPolicy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Headers that carry credentials: never logged, and never an account id or a linking signal
# as they are (the policy refuses them there; ``api_key: true`` keeps a key as a hash).
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


def refuse_credentials(header: str) -> None:
    """For the policy: an account id or a linking signal read from a credential header
    would keep the raw key in storage, logs, decisions and admin answers."""
    if header in CREDENTIAL_HEADERS:
        raise ValueError(
            f"{header!r} carries credentials, which are never kept raw: "
            "to identify accounts by API key use 'api_key: true' (kept as a hash)"
        )


@dataclass(slots=True)
class Identity:
    account: str
    tier: str
    client_ip: str | None
    headers: dict[str, str]  # lower-case names; context headers only when trusted
    # scope["state"]: what an auth layer in the same process set (linking signals)
    state: Mapping[str, Any] = field(default_factory=dict)


def decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; latin-1 maps every byte, so a non-UTF-8 header never fails to decode.

    Of a header sent on several lines the first line wins, as in starlette's ``Headers`` and
    most frameworks an app behind us reads it with: the account we count is the account the
    app serves. x-forwarded-for is a list (RFC 9110, 5.3): its lines are joined in order, so
    a hop a trusted proxy added on a line of its own is not lost behind a client's line."""
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in reversed(raw)
    }
    if len(headers) < len(raw):  # a repeated name: rare, so the common case stays one pass
        hops = [v.decode("latin-1") for n, v in raw if n.lower() == b"x-forwarded-for"]
        if len(hops) > 1:
            headers["x-forwarded-for"] = ", ".join(hops)
    return headers


# An account id becomes part of storage keys and log lines: a longer one (only whoever may
# set the account header can send it) is replaced by its digest, so that a key stays small.
# Linking signal values are bounded the same way (cluster.signals).
MAX_ACCOUNT_CHARS = 256


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def bounded(text: str) -> str:
    """``text``, or ``long-<digest>`` when it is longer than ``MAX_ACCOUNT_CHARS``."""
    return text if len(text) <= MAX_ACCOUNT_CHARS else "long-" + _digest(text)


def hash_api_key(key: str) -> str:
    """API keys are never stored or logged raw: the account becomes a hash of the key."""
    return "key-" + _digest(key)


class ProxyMatcher:
    """Is this peer one of our trusted proxies? (addresses and CIDRs, parsed once)."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        known = self._cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped
                known = any(address in network for network in self.networks)
            if len(self._cache) < 10_000:
                self._cache[host] = known
        return known


class Identifier:
    def __init__(self, policy: CompiledPolicy) -> None:
        identity = policy.identity
        self.sources = tuple((s.header, s.state, s.api_key, s.client_ip) for s in identity.account)
        self.tier_header = identity.tier.header.lower() if identity.tier.header else None
        self.tier_state = identity.tier.state
        self.default_tier = policy.default_tier
        self.tiers = policy.tiers
        self.proxies = ProxyMatcher(policy.trusted_proxies)
        self.headers_need_trust = identity.context_headers_from == "trusted_proxies"

    def client_ip(
        self, scope: MutableMapping[str, Any], headers: dict[str, str]
    ) -> tuple[str | None, bool]:
        """The client address after trusted proxies, and whether the peer was a trusted proxy."""
        client = scope.get("client")
        peer = client[0] if client else None
        if peer is None or peer not in self.proxies:
            return peer, False
        forwarded = headers.get("x-forwarded-for")  # every line, in order (decode_headers)
        if not forwarded:
            return peer, True
        # Walk right to left: the first address that is not our own proxy is the client.
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in self.proxies:
                return hop, True
        return hops[0] if hops else peer, True

    def identify(self, scope: MutableMapping[str, Any], headers: dict[str, str]) -> Identity:
        ip, via_proxy = self.client_ip(scope, headers)
        trusted = via_proxy or not self.headers_need_trust
        context = headers if trusted else {}
        state = scope.get("state") or {}
        account = None
        for header, state_key, api_key, client_ip in self.sources:
            if header is not None:
                account = context.get(header) or None
            elif state_key is not None:
                value = state.get(state_key)
                account = str(value) if value else None
            elif api_key:
                account = self._api_key(headers)
            elif client_ip and ip:
                account = "ip-" + ip
            if account:
                break
        if not account:
            account = "anonymous"
        elif len(account) > MAX_ACCOUNT_CHARS:
            account = bounded(account)
        return Identity(account, self.tier_for(context, state), ip, context, state)

    def tier_for(self, headers: dict[str, str], state: dict[str, Any]) -> str:
        tier = None
        if self.tier_header is not None:
            tier = headers.get(self.tier_header)
        elif self.tier_state is not None:
            tier = state.get(self.tier_state)
        if tier not in self.tiers:
            return self.default_tier  # an unknown tier name never grants more than the default
        return tier  # type: ignore[return-value]

    @staticmethod
    def _api_key(headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return hash_api_key(auth[7:].strip())
        key = headers.get("x-api-key")
        return hash_api_key(key) if key else None
