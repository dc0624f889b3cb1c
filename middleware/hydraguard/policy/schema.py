"""The policy file's schema: every key known, every unknown key an error.

pydantic does the validation; ``loader.py`` turns its error locations back into
file:line. Limits are strings in ``limits`` notation ("60/minute", "10 per second;
2000/day") or ``{limit: ..., mode: shadow}`` to run one rule in shadow.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from limits import parse_many
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..assess.config import AnomalyConfig
from ..cluster.config import ClusteringConfig
from ..identify import refuse_credentials
from ..record.audit import AuditConfig

Mode = Literal["enforce", "shadow"]
Dialect = Literal[
    "openai-chat", "openai-responses", "anthropic-messages", "anthropic-batches", "generic"
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_limit_string(text: str) -> str:
    try:
        items = parse_many(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not in limits notation (e.g. '60/minute'): {exc}") from None
    if not items:
        raise ValueError(f"{text!r} holds no limit")
    return text


class LimitRule(Strict):
    limit: str
    mode: Mode | None = None  # None: the policy's mode

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"limit": value} if isinstance(value, str) else value

    @field_validator("limit")
    @classmethod
    def _valid(cls, value: str) -> str:
        return _check_limit_string(value)


class ConcurrencyRule(Strict):
    max: Annotated[int, Field(ge=1)]
    mode: Mode | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: object) -> object:
        return {"max": value} if isinstance(value, int) and not isinstance(value, bool) else value


class LimitSet(Strict):
    requests: list[LimitRule] = []
    tokens: list[LimitRule] = []
    concurrency: ConcurrencyRule | None = None

    @field_validator("requests", "tokens", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str | dict) else value


class Growth(Strict):
    """Cluster limits grow with membership: amount x min(max_factor, 1 + per_member x (size - 1))."""

    per_member: Annotated[float, Field(ge=0)] = 0.0
    max_factor: Annotated[float, Field(ge=1)] = 1.0


class ClusterLimits(LimitSet):
    growth: Growth = Growth()


class Tier(LimitSet):
    max_output_tokens: Annotated[int, Field(ge=1)] = 4096


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return value


class KeyedValueError(ValueError):
    """A model-level error that belongs to one key: the loader reports that key's line."""

    def __init__(self, key_path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key_path = key_path


class AccountSource(Strict):
    """One place to look for the account id; the first that yields a value wins."""

    header: str | None = None
    state: str | None = None
    api_key: bool = False  # authorization: Bearer / x-api-key, hashed
    client_ip: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> AccountSource:
        chosen = [self.header is not None, self.state is not None, self.api_key, self.client_ip]
        if sum(chosen) != 1:
            raise ValueError(
                "an account source needs exactly one of header, state, api_key, client_ip"
            )
        if self.header is not None:
            object.__setattr__(self, "header", self.header.lower())
            refuse_credentials(self.header)
        return self


class TierSource(Strict):
    header: str | None = None
    state: str | None = None
    default: str = "default"


class Identity(Strict):
    account: list[AccountSource] = Field(
        default_factory=lambda: [
            AccountSource(header="x-account-id"),
            AccountSource(api_key=True),
            AccountSource(client_ip=True),
        ]
    )
    tier: TierSource = TierSource(header="x-account-tier")
    # Checked item by item so an error names the bad entry (trusted_proxies[1]) and its line.
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = ["127.0.0.1", "::1"]
    # "trusted_proxies": context headers count only when the peer is a trusted proxy.
    context_headers_from: Literal["anyone", "trusted_proxies"] = "anyone"


class Route(Strict):
    path: str | None = None
    prefix: str | None = None
    dialect: Dialect = "generic"
    # The largest body this route reads (batches carry thousands of requests); else body.max_bytes.
    max_bytes: Annotated[int, Field(ge=1024)] | None = None

    @field_validator("max_bytes")
    @classmethod
    def _read_bodies_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("dialect") == "generic":
            raise ValueError("a generic route never reads its body: max_bytes has no effect")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Route:
        if (self.path is None) == (self.prefix is None):
            raise ValueError("a route needs exactly one of 'path' or 'prefix'")
        return self


class Body(Strict):
    max_bytes: Annotated[int, Field(ge=1024)] = 1_048_576


class Tokens(Strict):
    chars_per_token: Annotated[float, Field(gt=0)] = 4.0
    per_message: Annotated[int, Field(ge=0)] = 4
    # Ask OpenAI-style upstreams for the final usage chunk (stream_options.include_usage)
    # so streamed tokens are settled from real usage rather than estimated.
    stream_usage: bool = True


class Storage(Strict):
    on_error: Literal["open", "closed", "local"] = "open"
    # Bounds the added latency; counts event-loop lag too, so not too tight on a busy server.
    timeout: Annotated[float, Field(gt=0, le=10)] = 0.25
    replicas: Annotated[int, Field(ge=1)] = 1  # "local": per-process limits are divided by this
    concurrency_lease: Annotated[float, Field(gt=0)] = 600.0
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_reset: Annotated[float, Field(gt=0)] = 5.0


class Admin(Strict):
    token: str | None = None
    token_env: str | None = "HYDRAGUARD_ADMIN_TOKEN"


class Policy(Strict):
    version: Literal[1] = 1
    name: str = "default"
    mode: Mode = "enforce"
    strategy: Literal["sliding-window", "fixed-window"] = "sliding-window"
    identity: Identity = Identity()
    routes: list[Route] = [
        Route(path="/v1/chat/completions", dialect="openai-chat"),
        Route(path="/v1/messages", dialect="anthropic-messages"),
    ]
    body: Body = Body()
    tokens: Tokens = Tokens()
    tiers: dict[str, Tier] = {"default": Tier()}
    global_: LimitSet = Field(default=LimitSet(), alias="global")
    # Absent sections are off: linking, cluster limits and anomaly rules apply only when named.
    clustering: ClusteringConfig = ClusteringConfig(enabled=False)
    clusters: ClusterLimits = ClusterLimits()
    anomaly: AnomalyConfig = AnomalyConfig(enabled=False)
    audit: AuditConfig = AuditConfig()
    storage: Storage = Storage()
    admin: Admin = Admin()

    @model_validator(mode="after")
    def _default_tier_exists(self) -> Policy:
        if self.identity.tier.default not in self.tiers:
            raise KeyedValueError(
                ("identity", "tier", "default"),
                f"identity.tier.default is {self.identity.tier.default!r}, "
                f"which is not among the tiers ({', '.join(sorted(self.tiers))})",
            )
        return self

    @model_validator(mode="after")
    def _routes_are_distinct(self) -> Policy:
        # A second route for the same path or prefix could never match: the first one wins.
        seen: dict[tuple[str, str], int] = {}
        for i, route in enumerate(self.routes):
            kind = "path" if route.path is not None else "prefix"
            value = route.path if route.path is not None else route.prefix
            first = seen.setdefault((kind, value or ""), i)
            if first != i:
                raise KeyedValueError(
                    ("routes", i, kind),
                    f"{kind} {value!r} is already routes[{first}]: a second route for it "
                    "would never match",
                )
        return self
