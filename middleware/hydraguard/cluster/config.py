"""The policy's ``clustering:`` section: which signals link accounts, and how strongly.

Two accounts link when the weights of the DISTINCT signal values they share add
up to ``threshold``; an ``explicit`` signal (an org id) links outright. A value
shared by more than ``max_fanout`` accounts is "saturated" and stops counting:
a corporate NAT, a browser's TLS fingerprint or a stock prompt says nothing
about who runs an account. An account holds at most ``max_values_per_account`` values of
a signal: one that shows a new device or JA4 on every request, or crosses many subnets,
lets go of its oldest value for each new one, so its record (and the cost of linking
it) stays bounded.

The defaults are tuned so that the weak signals a benign crowd shares (client
subnet 0.3 + JA4 0.2 + one common prompt template 0.3 = 0.8) stay below the
threshold, while a payment instrument (1.0) links alone, and device + subnet +
a rare JA4 (1.1), device + template + subnet (1.2) or several shared templates
(0.3 each) link.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..assess.config import parse_duration
from ..identify import refuse_credentials

RESERVED_SIGNALS = frozenset({"manual"})  # "manual" names operator links in explanations


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientIpSource(Strict):
    """The client address cut to its network prefix (one household / office)."""

    v4_prefix: Annotated[int, Field(ge=0, le=32)] = 24
    v6_prefix: Annotated[int, Field(ge=0, le=128)] = 48


class TemplateSource(Strict):
    """LSH band keys of the prompt's template fingerprint, supplied by the caller.

    ``weight`` is the weight of one fully shared template: each of its ``bands``
    band keys carries ``weight / bands``, so a near-duplicate template (some
    bands equal) counts in proportion.
    """

    bands: Annotated[int, Field(ge=1, le=64)] = 4


# Values an auth layer sends when it has none: they are no evidence, and linking on them
# would put every account without a card (or org) into one cluster.
PLACEHOLDERS = ("-", "0", "none", "null", "unknown", "undefined", "n/a")


class SignalSpec(Strict):
    header: str | None = None
    state: str | None = None
    client_ip: ClientIpSource | None = None
    template: TemplateSource | None = None
    weight: Annotated[float, Field(ge=0.0)] = 0.0
    max_fanout: Annotated[int, Field(ge=1)] = 50
    # Past it, the account's oldest value of this signal is released (release.py).
    max_values_per_account: Annotated[int, Field(ge=1)] = 64
    ignore_values: tuple[str, ...] = PLACEHOLDERS  # case-insensitive; [] to count them all
    ignore_cidrs: tuple[str, ...] = ()
    explicit: bool = False

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SignalSpec:
        chosen = [x is not None for x in (self.header, self.state, self.client_ip, self.template)]
        if sum(chosen) != 1:
            raise ValueError("a signal needs exactly one of header, state, client_ip, template")
        if self.header is not None:
            object.__setattr__(self, "header", self.header.lower())
            refuse_credentials(self.header)
        if self.ignore_cidrs and self.client_ip is None:
            raise ValueError("ignore_cidrs applies only to a client_ip signal")
        if not self.explicit and self.weight == 0.0:
            raise ValueError("a signal needs a weight > 0 or explicit: true")
        return self

    @field_validator("ignore_cidrs")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
        return values

    @property
    def value_weight(self) -> float:
        """The evidence one shared value of this signal adds to a pair."""
        return self.weight / self.template.bands if self.template is not None else self.weight


# Addresses that say nothing about who is behind them: every home router and
# container network uses them, and behind a proxy we would only see the proxy.
NON_PUBLIC_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


def default_signals() -> dict[str, SignalSpec]:
    """The shipped default policy's signals (policies/default.yaml explains the numbers)."""
    return {
        "org": SignalSpec(header="x-org-id", explicit=True, max_fanout=100_000),
        # One card paying for many accounts is the strongest tie short of an org id;
        # a generous fanout so an actor cannot escape by putting more accounts on it.
        "payment": SignalSpec(header="x-payment-fingerprint", weight=1.0, max_fanout=100_000),
        "device": SignalSpec(header="x-device-fingerprint", weight=0.6, max_fanout=20),
        "ja4": SignalSpec(header="x-ja4", weight=0.2, max_fanout=10),
        "subnet": SignalSpec(
            client_ip=ClientIpSource(), weight=0.3, max_fanout=50, ignore_cidrs=NON_PUBLIC_CIDRS
        ),
        "template": SignalSpec(template=TemplateSource(bands=1), weight=0.15, max_fanout=10),
    }


def _keep_forever_when_null(value: Any) -> Any:
    return 0.0 if value is None else parse_duration(value)


# Seconds, or "90d"; 0 or null keeps every account forever.
Retention = Annotated[float, BeforeValidator(_keep_forever_when_null), Field(ge=0.0)]

# 90 days: an account unlinked and unseen that long is forgotten (a linked one never is).
# Forgetting costs little: an idle account spends no quota, and when it comes back it is
# observed afresh and links to whoever holds its card, device or org at that moment; what
# is lost is weak evidence it half-shared with others (a subnet, templates) and its
# history. 90 days spans three monthly billing cycles and the weeks-long quiet spells of
# a campaign, while the index holds only accounts seen in the last quarter instead of
# every account ever seen.
DEFAULT_RETENTION = 90 * 86400.0


class ClusteringConfig(Strict):
    enabled: bool = True
    threshold: Annotated[float, Field(gt=0.0)] = 1.0
    signals: dict[str, SignalSpec] = Field(default_factory=default_signals)
    retention: Retention = DEFAULT_RETENTION

    @field_validator("signals")
    @classmethod
    def _names(cls, values: dict[str, SignalSpec]) -> dict[str, SignalSpec]:
        for name in values:
            if name in RESERVED_SIGNALS:
                raise ValueError(f"{name!r} is reserved for operator links")
        return values
