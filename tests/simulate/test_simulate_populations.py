"""Properties of each population that detectors and linking rely on."""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter, defaultdict

from simulate_helpers import STEP_BY_STEP, Traffic, last_user_text

from hydraguard.simulate import corpus, corpus_attack
from hydraguard.simulate.fingerprints import JA4_CHROME
from hydraguard.simulate.generate import generate
from hydraguard.simulate.population import build
from hydraguard.simulate.scenario import Scenario


def _matcher(templates: tuple[str, ...]) -> list[tuple[int, str, re.Pattern[str]]]:
    out = []
    for template in set(templates):
        parts = re.split(r"\{[a-z_0-9]+\}", template.rstrip("?.!"))
        pattern = ".+?".join(re.escape(p) for p in parts)
        out.append((sum(map(len, parts)), template, re.compile(pattern, re.I | re.S)))
    return sorted(out, reverse=True)  # most specific first


def _template(matchers: list[tuple[int, str, re.Pattern[str]]], text: str) -> str | None:
    return next((t for _, t, p in matchers if p.search(text)), None)


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values)


def test_reasoning_accounts_share_cards_in_groups_and_one_ja4(small: Traffic) -> None:
    accounts = small.accounts("reasoning_distiller")
    cards = Counter(a.headers["x-payment-fingerprint"] for a in accounts)
    sizes = sorted(cards.values())
    assert all(5 <= size <= 20 for size in sizes[1:])  # the last group may be cut short
    assert len(cards) < len(accounts) / 4
    assert len({a.headers["x-ja4"] for a in accounts}) == 1
    assert len({a.headers["x-device-fingerprint"] for a in accounts}) == len(accounts)


def test_reasoning_traffic_comes_from_a_spread_proxy_pool_with_reuse(small: Traffic) -> None:
    records = small.of_kind("reasoning_distiller")
    subnets = {r["ip"].rsplit(".", 1)[0] for r in records}
    assert len(subnets) >= 100
    users_per_ip: dict[str, set[str]] = defaultdict(set)
    for r in records:
        users_per_ip[r["ip"]].add(r["account"])
    assert max(len(users) for users in users_per_ip.values()) >= 3


def test_reasoning_prompts_come_from_few_cot_templates_with_high_max_tokens(
    small: Traffic,
) -> None:
    matchers = _matcher(corpus_attack.REASONING_TEMPLATES)
    records = small.of_kind("reasoning_distiller")
    used = Counter(_template(matchers, last_user_text(r)) for r in records)
    assert None not in used
    assert 3 <= len(used) <= 4
    assert len({last_user_text(r) for r in records}) > 0.9 * len(records)  # fillers vary
    assert all(STEP_BY_STEP.search(last_user_text(r)) for r in records)
    assert all(r["body"]["max_tokens"] >= 8192 for r in records)


def test_reasoning_campaign_runs_round_the_clock_at_a_steady_pace(small: Traffic) -> None:
    records = small.of_kind("reasoning_distiller")
    assert {int(r["ts"] // 3600) % 24 for r in records} == set(range(24))
    times: dict[str, list[float]] = defaultdict(list)
    for r in records:
        times[r["account"]].append(r["ts"])
    gaps = [[b - a for a, b in itertools.pairwise(ts)] for ts in times.values() if len(ts) >= 5]
    assert gaps and max(_cv(g) for g in gaps) < 0.1
    assert statistics.median(len(ts) for ts in times.values()) < 60  # each a light user


def test_probers_send_logprob_extraction_parameters(small: Traffic) -> None:
    records = small.of_kind("logprob_prober")
    assert len({r["account"] for r in records}) == small.scenario.prober_accounts
    for r in records:
        body = r["body"]
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["max_tokens"] == 1 and body["logit_bias"]
        assert len(last_user_text(r)) < 100
    assert len({r["body"]["temperature"] for r in records}) >= 10


def test_agentic_accounts_mix_tool_tasks_and_chat_and_share_devices(small: Traffic) -> None:
    records = small.of_kind("agentic_distiller")
    with_tools = sum("tools" in r["body"] for r in records) / len(records)
    assert 0.6 <= with_tools <= 0.97
    devices = Counter(
        a.headers["x-device-fingerprint"] for a in small.accounts("agentic_distiller")
    )
    assert all(4 <= n <= 12 for n in sorted(devices.values())[1:])
    longest = max(len(r["body"]["messages"]) for r in records)
    assert longest >= 9  # multi-step history: task + tool exchanges


def test_benign_nat_share_is_about_five_percent() -> None:
    population = build(Scenario())
    home = Counter(a.ips[0] for a in population.benign if a.kind != "team")
    accounts = [a for a in population.benign if a.kind != "team"]
    shared = sum(home[a.ips[0]] > 1 for a in accounts) / len(accounts)
    assert 0.045 <= shared <= 0.055


def test_benign_nat_sharing_shows_in_traffic(small: Traffic) -> None:
    ips: dict[str, set[str]] = defaultdict(set)
    for r in small.records:
        if small.labels[r["account"]]["class"] == "benign" and r["headers"].get("x-org-id") is None:
            ips[r["ip"]].add(r["account"])
    active = {a for users in ips.values() for a in users}
    shared = {a for users in ips.values() if len(users) > 1 for a in users}
    assert 0.02 <= len(shared) / len(active) <= 0.09


def test_a_common_ja4_is_shared_by_many_benign_accounts_and_by_attackers_ja4s() -> None:
    population = build(Scenario())
    benign_ja4 = Counter(a.headers["x-ja4"] for a in population.benign)
    assert benign_ja4[JA4_CHROME] > 0.4 * len(population.benign)
    for campaign in population.campaigns:
        assert benign_ja4[campaign.accounts[0].headers["x-ja4"]] >= 1  # JA4 alone never links


def test_payment_fingerprints_are_unique_per_benign_account_except_company_cards(
    small: Traffic,
) -> None:
    cards = Counter(a.headers["x-payment-fingerprint"] for a in small.population.benign)
    shared = [a for a in small.population.benign if cards[a.headers["x-payment-fingerprint"]] > 1]
    assert shared and all(a.kind == "team" for a in shared)


def test_team_accounts_share_office_ip_and_org_but_not_devices(small: Traffic) -> None:
    teams: dict[str, list] = defaultdict(list)
    for account in small.accounts("team"):
        teams[account.headers["x-org-id"]].append(account)
    assert len(teams) == small.scenario.teams
    for members in teams.values():
        assert len({m.ips[0] for m in members}) == 1
        assert len({m.headers["x-device-fingerprint"] for m in members}) == len(members)
        assert len({m.headers["x-payment-fingerprint"] for m in members}) in (1, len(members))


def test_students_ask_for_steps_only_some_of_the_time(small: Traffic) -> None:
    records = small.of_kind("student")
    share = sum(bool(STEP_BY_STEP.search(last_user_text(r))) for r in records) / len(records)
    assert 0.1 <= share <= 0.45


def test_ordinary_users_rarely_repeat_a_template(small: Traffic) -> None:
    matchers = _matcher(
        corpus.GENERIC + tuple(t for tp in corpus.TOPICS.values() for t in tp.templates)
    )
    prompts: dict[str, list[str]] = defaultdict(list)
    for r in small.of_kind("ordinary"):
        text = last_user_text(r)
        if text not in corpus.FOLLOW_UPS and "\n\n" not in text:
            prompts[r["account"]].append(text)
    shares = []
    for texts in prompts.values():
        if len(texts) >= 8:
            used = Counter(_template(matchers, t) for t in texts)
            assert None not in used
            shares.append(used.most_common(1)[0][1] / len(texts))
    assert len(shares) >= 50 and statistics.mean(shares) < 0.25


def test_ordinary_users_sleep_at_night_local_time(small: Traffic) -> None:
    tz = {a.id: a.tz for a in small.accounts("ordinary")}
    hours = Counter(
        int((r["ts"] / 3600 + tz[r["account"]]) % 24) for r in small.of_kind("ordinary")
    )
    total = sum(hours.values())
    assert sum(hours[h] for h in range(2, 6)) / total < 0.06
    assert sum(hours[h] for h in range(17, 23)) / total > 0.3


def test_developers_run_a_regular_nightly_batch() -> None:
    scenario = Scenario(
        seed=11,
        hours=96,
        ordinary=0,
        developers=8,
        teams=0,
        students=0,
        heavy=0,
        reasoning_campaigns=0,
        agentic_campaigns=0,
        prober_campaigns=0,
    )
    records, _ = generate(scenario)
    nightly: dict[str, list[float]] = defaultdict(list)
    prompts: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r["body"].get("temperature") == 0.0:
            nightly[r["account"]].append(r["ts"])
            prompts[r["account"]].append(last_user_text(r))
    assert len(nightly) == 8
    for account, times in nightly.items():
        assert len(set(prompts[account])) < len(prompts[account]) / 2  # same items nightly
        batches: list[list[float]] = [[times[0]]]
        for a, b in itertools.pairwise(times):
            if b - a < 600:
                batches[-1].append(b)
            else:
                batches.append([b])
        full = [b for b in batches if b[0] > scenario.start + 60 and b[-1] < scenario.end - 60]
        assert len(full) >= 2
        assert len({len(b) for b in full}) == 1  # the same evaluation set each night
        starts = [b[0] % 86400 for b in full]
        assert max(starts) - min(starts) < 1.0  # cron: same second every night
        assert max(_cv([y - x for x, y in itertools.pairwise(b)]) for b in full) < 0.1
