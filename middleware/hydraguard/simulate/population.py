"""Who sends traffic: benign accounts of each persona and the hydra campaigns' accounts,
with the context headers and addresses each one presents.

Account ids are handed out in a seeded shuffle, so an id says nothing about its population.
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
_TIMEZONES = (-8, -7, -6, -5, -3, 0, 1, 2, 3, 5.5, 8, 9, 10)
_TZ_WEIGHTS = (12, 4, 7, 17, 5, 10, 16, 6, 3, 7, 6, 5, 2)


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


class _Builder:
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
            tz=rng.choices(_TIMEZONES, _TZ_WEIGHTS)[0] if tz is None else tz,
            topics=topics or tuple(rng.sample(sorted(corpus.TOPICS), rng.randint(2, 5))),
            key=key,
        )


def _nat_addresses(scenario: Scenario, count: int) -> dict[int, str]:
    """Which of ``count`` non-team benign accounts sit behind a shared NAT address."""
    rng = random.Random(f"{scenario.seed}/nat")
    chosen = rng.sample(range(count), round(scenario.nat_share * count))
    out: dict[int, str] = {}
    while chosen:
        size = min(len(chosen), rng.randint(*scenario.nat_size))
        address = fp.public_ip(rng)
        for _ in range(size):
            out[chosen.pop()] = address
    return out


def _benign(b: _Builder) -> list[Account]:
    s = b.s
    kinds = [("ordinary", s.ordinary), ("developer", s.developers)]
    kinds += [("student", s.students), ("heavy", s.heavy)]
    nat = _nat_addresses(s, sum(n for _, n in kinds))
    out: list[Account] = []
    for kind, count in kinds:
        for k in range(count):
            key = f"{kind}/{k}"
            rng = random.Random(f"{s.seed}/{key}")
            home = nat.get(len(out)) or fp.public_ip(rng)
            roaming = tuple(fp.public_ip(rng) for _ in range(rng.randint(0, 2)))
            sdk_share = {"developer": 1.0, "heavy": 0.3, "ordinary": 0.06}.get(kind, 0.0)
            main = fp.pick(rng, fp.SDKS if rng.random() < sdk_share else fp.BROWSERS)
            phone = rng.random() < (0.5 if kind == "student" else 0.3) and kind != "developer"
            tier = "pro" if kind in ("developer", "heavy") or rng.random() < 0.2 else "free"
            topics = tuple(rng.sample(corpus.STUDY_TOPICS, 3)) if kind == "student" else ()
            out.append(
                b.account(
                    rng,
                    kind,
                    key,
                    clients=(main, fp.PHONE) if phone else (main,),
                    ips=(home, *roaming),
                    tier=tier,
                    topics=topics,
                )
            )
    for t in range(s.teams):
        rng = random.Random(f"{s.seed}/team/{t}")
        org, office = fp.token(rng, "org_", 32), fp.public_ip(rng)
        card = fp.token(rng, "pf_", 96) if rng.random() < s.company_card_share else None
        tz = rng.choices(_TIMEZONES, _TZ_WEIGHTS)[0]
        for m in range(s.team_size):
            key = f"team/{t}/{m}"
            mrng = random.Random(f"{s.seed}/{key}")
            main = fp.pick(mrng, fp.BROWSERS if mrng.random() < 0.7 else fp.SDKS)
            topics = tuple(mrng.sample(corpus.WORK_TOPICS, 3))
            out.append(
                b.account(
                    mrng,
                    "team",
                    key,
                    clients=(main,),
                    ips=(office,),
                    tier="team",
                    payment=card,
                    org=org,
                    tz=tz,
                    topics=topics,
                )
            )
    return out


def _groups(rng: random.Random, n: int, size: tuple[int, int]) -> list[int]:
    """Group number of each of ``n`` accounts, groups of ``size`` (lo, hi) in random order."""
    groups: list[int] = []
    group = 0
    while len(groups) < n:
        groups += [group] * rng.randint(*size)
        group += 1
    groups = groups[:n]
    rng.shuffle(groups)
    return groups


def _campaigns(b: _Builder) -> list[Campaign]:
    s = b.s
    out: list[Campaign] = []
    specs = (
        ("reasoning_distiller", "hydra-reasoning", s.reasoning_campaigns, s.reasoning_accounts),
        ("agentic_distiller", "hydra-agentic", s.agentic_campaigns, s.agentic_accounts),
        ("logprob_prober", "hydra-probe", s.prober_campaigns, s.prober_accounts),
    )
    rates = {"reasoning_distiller": s.reasoning_rate, "agentic_distiller": s.agentic_rate}
    for kind, prefix, campaigns, size in specs:
        for c in range(campaigns):
            name = f"{prefix}-{c + 1}"
            rng = random.Random(f"{s.seed}/{name}")
            if kind == "reasoning_distiller":
                client = fp.Client(fp.JA4_GO, fp.UA_GO, "anthropic" if c % 2 == 0 else "openai")
                proxies = fp.subnet_pool(rng, s.proxy_subnets, s.proxy_addresses)
                cards = [fp.token(rng, "pf_", 96) for _ in range(size)]
                payments: list[str | None] = [cards[g] for g in _groups(rng, size, s.card_group)]
                devices: list[str | None] = [None] * size
                sticky = [proxies[0]] * size  # unused: every request picks a proxy
            elif kind == "agentic_distiller":
                client = fp.Client(fp.JA4_NODE, fp.UA_ANTHROPIC_JS, "anthropic")
                proxies = fp.subnet_pool(rng, max(1, size // 3), max(1, size // 2))
                vms = [fp.token(rng, "dev_") for _ in range(size)]
                devices = [vms[g] for g in _groups(rng, size, s.device_group)]
                payments = [None] * size
                sticky = [rng.choice(proxies) for _ in range(size)]
            else:
                client = fp.Client(fp.JA4_PYTHON, fp.UA_OPENAI_PY, "openai")
                proxies = fp.subnet_pool(rng, 6, 40, hosting=True)
                payments, devices = [None] * size, [None] * size
                sticky = [proxies[0]] * size
            accounts = tuple(
                b.account(
                    random.Random(f"{s.seed}/{name}/{k}"),
                    kind,
                    f"{name}/{k}",
                    clients=(client,),
                    ips=(sticky[k],),
                    payment=payments[k],
                    device=devices[k],
                    campaign=name,
                    tier="pro" if rng.random() < 0.35 else "free",
                )
                for k in range(size)
            )
            rate = rates.get(kind, s.prober_rate) * s.intensity
            out.append(Campaign(name, kind, accounts, proxies, rate))
    return out


def build(scenario: Scenario) -> Population:
    builder = _Builder(scenario)
    return Population(tuple(_benign(builder)), tuple(_campaigns(builder)))
