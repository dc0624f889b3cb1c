"""Accounts as the simulator sees them: identity, headers per device, addresses, habits;
and the factory that hands out shuffled ids, so an id says nothing about its population.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from hydraguard.simulate import corpus
from hydraguard.simulate import fingerprints as fp
from hydraguard.simulate.scenario import Scenario

BENIGN_KINDS = ("ordinary", "developer", "team", "student", "heavy")
CAMPAIGN_KINDS = ("reasoning_distiller", "agentic_distiller", "logprob_prober")

# UTC offsets where users live, weighted by a rough share of traffic.
TIMEZONES = (-8, -7, -6, -5, -3, 0, 1, 2, 3, 5.5, 8, 9, 10)
TZ_WEIGHTS = (12, 4, 7, 17, 5, 10, 16, 6, 3, 7, 6, 5, 2)


@dataclass(frozen=True, eq=False)
class Account:
    id: str
    kind: str
    campaign: str | None
    tier: str
    devices: tuple[dict[str, str], ...]  # full header sets; [0] is the main device
    ips: tuple[str, ...]  # [0] home/office/NAT/sticky address, then roaming ones
    dialect: str  # "openai" or "anthropic"
    tz: float  # UTC offset, hours
    topics: tuple[str, ...]
    key: str  # stable seed key, independent of the shuffled id

    @property
    def headers(self) -> dict[str, str]:
        return self.devices[0]

    def label(self) -> dict[str, str | None]:
        cls = "attacker" if self.campaign else "benign"
        return {"class": cls, "kind": self.kind, "campaign": self.campaign}


@dataclass(frozen=True, eq=False)
class Campaign:
    name: str
    kind: str
    accounts: tuple[Account, ...]
    proxies: tuple[str, ...]  # exit addresses the campaign rotates through per request
    rate: float  # requests per hour, whole campaign


@dataclass(frozen=True, eq=False)
class Population:
    benign: tuple[Account, ...]
    campaigns: tuple[Campaign, ...]

    def accounts(self) -> Iterator[Account]:
        yield from self.benign
        for campaign in self.campaigns:
            yield from campaign.accounts


def _headers(
    acct: str, tier: str, payment: str, device: str, client: fp.Client, org: str | None = None
) -> dict[str, str]:
    headers = {"x-account-id": acct, "x-account-tier": tier}
    if org:
        headers["x-org-id"] = org
    headers["x-payment-fingerprint"] = payment
    headers["x-device-fingerprint"] = device
    headers["x-ja4"] = client.ja4
    headers["user-agent"] = client.user_agent
    return headers


class AccountFactory:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        total = scenario.benign_accounts + scenario.attacker_accounts
        numbers = list(range(1, total + 1))
        random.Random(f"{scenario.seed}/ids").shuffle(numbers)
        self._ids = iter(numbers)

    def next_id(self) -> str:
        return f"acct-{next(self._ids):06d}"

    def account(
        self,
        rng: random.Random,
        kind: str,
        key: str,
        *,
        clients: tuple[fp.Client, ...],
        ips: tuple[str, ...],
        tier: str,
        payment: str | None = None,
        device: str | None = None,
        campaign: str | None = None,
        org: str | None = None,
        tz: float | None = None,
        topics: tuple[str, ...] = (),
        dialect: str | None = None,
    ) -> Account:
        acct = self.next_id()
        pay = payment or fp.token(rng, "pf_", 96)
        devices = tuple(
            _headers(
                acct, tier, pay, device if i == 0 and device else fp.token(rng, "dev_"), c, org
            )
            for i, c in enumerate(clients)
        )
        return Account(
            id=acct,
            kind=kind,
            campaign=campaign,
            tier=tier,
            devices=devices,
            ips=ips,
            dialect=dialect or clients[0].dialect or rng.choice(("openai", "openai", "anthropic")),
            tz=rng.choices(TIMEZONES, TZ_WEIGHTS)[0] if tz is None else tz,
            topics=topics or tuple(rng.sample(sorted(corpus.TOPICS), rng.randint(2, 5))),
            key=key,
        )
