"""Who sends traffic: the benign personas' accounts (with shared NAT addresses and
corporate offices) plus the campaigns' accounts.
"""

from __future__ import annotations

import random

from hydraguard.simulate import corpus
from hydraguard.simulate import fingerprints as fp
from hydraguard.simulate.accounts import (
    TIMEZONES,
    TZ_WEIGHTS,
    Account,
    AccountFactory,
    Campaign,
    Population,
)
from hydraguard.simulate.campaigns import build_campaigns
from hydraguard.simulate.scenario import Scenario

__all__ = ["Account", "Campaign", "Population", "build"]


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


def _benign(b: AccountFactory) -> list[Account]:
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
        tz = rng.choices(TIMEZONES, TZ_WEIGHTS)[0]
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


def build(scenario: Scenario) -> Population:
    factory = AccountFactory(scenario)
    return Population(tuple(_benign(factory)), tuple(build_campaigns(factory)))
