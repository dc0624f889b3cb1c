"""What to simulate: population sizes, campaign sizes and intensities, all with defaults.

The default scenario is one day of traffic, roughly 150k requests, about half of them
from three hydra campaigns; it is sized to generate in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

# 2025-11-27 00:00:00 UTC: a fixed start so that output depends on the seed alone.
DEFAULT_START = 1764201600.0

BENIGN_FIELDS = ("ordinary", "developers", "students", "heavy")
CAMPAIGN_FIELDS = ("reasoning_accounts", "agentic_accounts", "prober_accounts")


@dataclass(frozen=True)
class Scenario:
    seed: int = 0
    hours: float = 24.0
    start: float = DEFAULT_START

    # benign populations (accounts)
    ordinary: int = 2000
    developers: int = 50
    teams: int = 20
    team_size: int = 5
    students: int = 200
    heavy: int = 30

    # benign behaviour
    nat_share: float = 0.05  # benign accounts behind a shared carrier/home NAT address
    nat_size: tuple[int, int] = (3, 12)  # accounts per shared NAT address
    company_card_share: float = 0.5  # teams paying with one company card
    student_step_share: float = 0.25  # student prompts asking for step-by-step answers
    developer_logprob_share: float = 0.2  # developers scoring multiple choice by logprobs
    stream_share: float = 0.15  # ordinary requests that stream

    # hydra campaigns: how many of each kind, accounts per campaign, requests per hour
    reasoning_campaigns: int = 1
    reasoning_accounts: int = 400
    reasoning_rate: float = 1200.0
    card_group: tuple[int, int] = (5, 20)  # accounts sharing one payment fingerprint
    proxy_subnets: int = 250
    proxy_addresses: int = 600

    agentic_campaigns: int = 1
    agentic_accounts: int = 60
    agentic_rate: float = 400.0
    device_group: tuple[int, int] = (4, 12)  # accounts sharing one device fingerprint

    prober_campaigns: int = 1
    prober_accounts: int = 100
    prober_rate: float = 1000.0

    intensity: float = 1.0  # multiplies every campaign's request rate

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        if self.hours <= 0:
            raise ValueError(f"hours must be positive, got {self.hours}")
        for name in (
            "nat_share",
            "company_card_share",
            "student_step_share",
            "developer_logprob_share",
            "stream_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        for name in ("nat_size", "card_group", "device_group"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        if self.team_size < 1 or self.proxy_subnets < 1 or self.proxy_addresses < 1:
            raise ValueError("team_size, proxy_subnets and proxy_addresses must be at least 1")

    @property
    def end(self) -> float:
        return self.start + self.hours * 3600.0

    @property
    def benign_accounts(self) -> int:
        return sum(getattr(self, f) for f in BENIGN_FIELDS) + self.teams * self.team_size

    @property
    def attacker_accounts(self) -> int:
        return (
            self.reasoning_campaigns * self.reasoning_accounts
            + self.agentic_campaigns * self.agentic_accounts
            + self.prober_campaigns * self.prober_accounts
        )

    def scaled(self, *, benign: int | None = None, attackers: int | None = None) -> Scenario:
        """The same mix with about ``benign`` benign and ``attackers`` attacker accounts in
        total, each population scaled in proportion (teams keep their size; campaign rates
        follow their account counts, so each account keeps its own pace)."""
        changes: dict[str, float] = {}
        if benign is not None:
            factor = benign / max(1, self.benign_accounts)
            for name in (*BENIGN_FIELDS, "teams"):
                changes[name] = round(getattr(self, name) * factor)
        if attackers is not None:
            factor = attackers / max(1, self.attacker_accounts)
            for name in CAMPAIGN_FIELDS:
                changes[name] = round(getattr(self, name) * factor)
            for name in ("reasoning_rate", "agentic_rate", "prober_rate"):
                changes[name] = getattr(self, name) * factor
        return replace(self, **changes)  # type: ignore[arg-type]
