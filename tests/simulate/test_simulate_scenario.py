from __future__ import annotations

import pytest

from hydraguard.simulate.generate import generate
from hydraguard.simulate.population import build
from hydraguard.simulate.scenario import Scenario


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ordinary": -1}, "ordinary must not be negative"),
        ({"hours": 0}, "hours must be positive"),
        ({"nat_share": 1.5}, "nat_share must be within 0..1"),
        ({"card_group": (20, 5)}, "card_group must be"),
        ({"team_size": 0}, "team_size"),
    ],
)
def test_scenario_rejects_impossible_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario(**changes)  # type: ignore[arg-type]


def test_scaled_keeps_the_mix_and_each_attacker_account_keeps_its_pace() -> None:
    base = Scenario()
    scaled = base.scaled(benign=1190, attackers=5600)
    assert scaled.ordinary == 1000 and scaled.teams == 10 and scaled.team_size == base.team_size
    assert scaled.reasoning_accounts == 4000
    assert scaled.reasoning_rate / scaled.reasoning_accounts == pytest.approx(
        base.reasoning_rate / base.reasoning_accounts
    )
    population = build(scaled)
    assert len(population.benign) == scaled.benign_accounts
    assert sum(len(c.accounts) for c in population.campaigns) == scaled.attacker_accounts


def test_account_ids_do_not_reveal_the_population() -> None:
    population = build(Scenario(ordinary=300, reasoning_accounts=300))
    benign = sorted(int(a.id.removeprefix("acct-")) for a in population.benign)
    attackers = sorted(
        int(a.id.removeprefix("acct-")) for c in population.campaigns for a in c.accounts
    )
    assert benign[0] < attackers[-1] and attackers[0] < benign[-1]


def test_campaigns_without_accounts_or_rate_send_nothing() -> None:
    scenario = Scenario(
        hours=1,
        ordinary=20,
        developers=0,
        teams=0,
        students=0,
        heavy=0,
        reasoning_accounts=0,
        agentic_rate=0.0,
        prober_campaigns=0,
    )
    records, labels = generate(scenario)
    kinds = {labels[r["account"]]["kind"] for r in records}
    assert kinds == {"ordinary"}


def test_default_scenario_size_is_in_the_expected_range() -> None:
    records, labels = generate(Scenario())
    attackers = lines = 0
    for record in records:
        lines += 1
        attackers += labels[record["account"]]["class"] == "attacker"
    assert 100_000 <= lines <= 300_000
    assert 0.3 <= attackers / lines <= 0.7
