"""The hydra campaigns' accounts: shared payment cards (reasoning distillers), shared
device fingerprints (agentic distillers), one client fingerprint per campaign, and the
proxy pools their requests leave from.
"""

from __future__ import annotations

import random

from hydraguard.simulate import fingerprints as fp
from hydraguard.simulate.accounts import AccountFactory, Campaign


def groups(rng: random.Random, n: int, size: tuple[int, int]) -> list[int]:
    """Group number of each of ``n`` accounts, groups of ``size`` (lo, hi) in random order."""
    groups: list[int] = []
    group = 0
    while len(groups) < n:
        groups += [group] * rng.randint(*size)
        group += 1
    groups = groups[:n]
    rng.shuffle(groups)
    return groups


def build_campaigns(b: AccountFactory) -> list[Campaign]:
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
                payments: list[str | None] = [cards[g] for g in groups(rng, size, s.card_group)]
                devices: list[str | None] = [None] * size
                sticky = [proxies[0]] * size  # unused: every request picks a proxy
            elif kind == "agentic_distiller":
                client = fp.Client(fp.JA4_NODE, fp.UA_ANTHROPIC_JS, "anthropic")
                proxies = fp.subnet_pool(rng, max(1, size // 3), max(1, size // 2))
                vms = [fp.token(rng, "dev_") for _ in range(size)]
                devices = [vms[g] for g in groups(rng, size, s.device_group)]
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
