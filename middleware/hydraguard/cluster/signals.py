"""Pull the linking signals out of one request, with the policy compiled once."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..identify import MAX_ACCOUNT_CHARS, bounded
from .config import ClusteringConfig, SignalSpec

Signals = dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    kind: str  # "header" | "state" | "client_ip" | "template"
    key: str  # header name or state key; "" for the others
    ignore: frozenset[str]  # lower-cased
    networks: tuple[tuple[int, int, int], ...]  # ignore_cidrs as (version, netmask, network)
    v4_prefix: int
    v6_prefix: int
    bands: int


def _compile(name: str, spec: SignalSpec) -> _Compiled:
    kind = next(k for k in ("header", "state", "client_ip", "template") if getattr(spec, k))
    return _Compiled(
        name=name,
        kind=kind,
        key=spec.header or spec.state or "",
        ignore=frozenset(v.strip().lower() for v in spec.ignore_values),
        networks=tuple(
            (net.version, int(net.netmask), int(net.network_address))
            for net in (ipaddress.ip_network(c.strip(), strict=False) for c in spec.ignore_cidrs)
        ),
        v4_prefix=spec.client_ip.v4_prefix if spec.client_ip else 32,
        v6_prefix=spec.client_ip.v6_prefix if spec.client_ip else 128,
        bands=spec.template.bands if spec.template else 0,
    )


class SignalExtractor:
    """``extract(...)`` -> ``{signal name: values}``; missing, empty and ignored values dropped."""

    def __init__(self, config: ClusteringConfig) -> None:
        self._signals = tuple(_compile(name, spec) for name, spec in config.signals.items())
        # Parsing an address costs more than the rest of extract(); clients repeat theirs.
        self._prefixes: dict[tuple[str, str], tuple[str, ...]] = {}

    def template(self, template_bands: Sequence[str]) -> Signals:
        """Only the template signals: what is learned after the response."""
        found: Signals = {}
        for sig in self._signals:
            if sig.kind == "template":
                values = self._clean(sig, tuple(template_bands)[: sig.bands])
                if values:
                    found[sig.name] = values
        return found

    def extract(
        self,
        headers: Mapping[str, str],
        state: Mapping[str, Any],
        client_ip: str | None,
        template_bands: Sequence[str] | None,
    ) -> Signals:
        found: Signals = {}
        values: tuple[str, ...]
        for sig in self._signals:
            if sig.kind == "header":
                raw = headers.get(sig.key)
                if raw is None:  # the usual case for most signals: nothing to clean
                    continue
                # _clean for one value, inlined: requests carry several of these headers.
                raw = raw.strip()
                if not raw or raw.lower() in sig.ignore:
                    values = ()
                elif len(raw) > MAX_ACCOUNT_CHARS:  # kept in the index and in key names
                    values = (bounded(raw),)
                else:
                    values = (raw,)
            elif sig.kind == "state":
                values = self._clean(sig, _as_values(state.get(sig.key)))
            elif sig.kind == "client_ip":
                if not client_ip:
                    continue
                cached = self._prefixes.get((sig.name, client_ip))
                if cached is None:
                    if len(self._prefixes) > 100_000:
                        self._prefixes.clear()
                    cached = self._prefixes[(sig.name, client_ip)] = self._prefix(sig, client_ip)
                values = cached
            elif template_bands:  # known only after the response (Learning)
                values = self._clean(sig, tuple(template_bands)[: sig.bands])
            else:
                continue
            if values:
                found[sig.name] = values
        return found

    @staticmethod
    def _clean(sig: _Compiled, raw: Sequence[object]) -> tuple[str, ...]:
        out: list[str] = []
        for item in raw:
            if item is None:
                continue
            value = str(item).strip()
            if value and value.lower() not in sig.ignore:
                value = bounded(value)  # kept in the index and in key names
                if value not in out:
                    out.append(value)
        return tuple(out)

    @staticmethod
    def _prefix(sig: _Compiled, client_ip: str | None) -> tuple[str, ...]:
        if not client_ip:
            return ()
        try:
            address = ipaddress.ip_address(client_ip.strip())
        except ValueError:
            return ()  # "unknown", a unix socket path...: no evidence, not an error
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        # The networks as integers, compiled once: `address in network` (Python code in
        # ipaddress, once per network) and building the prefix as an ip_network cost several
        # times the parse, for every address not seen before.
        version, ip = address.version, int(address)
        if any(v == version and ip & mask == net for v, mask, net in sig.networks):
            return ()
        prefix, bits = (sig.v4_prefix, 32) if version == 4 else (sig.v6_prefix, 128)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            # fe80::1%eth0: ip_network keeps the zone only when no host bits are cleared
            network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
        else:
            host_bits = (1 << (bits - prefix)) - 1
            network = f"{type(address)(ip & ~host_bits)}/{prefix}"
        if network in sig.ignore:
            return ()
        return (network,)


def _as_values(value: Any) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(value)
    return (value,)
