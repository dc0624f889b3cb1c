"""What arrival times reveal: volume, timing regularity, activity spread."""

from __future__ import annotations

import random

import pytest
from assess_traffic import START, chat_user, event, hydra, nat_team, nightly_eval, score


def steady(rate_per_min: float, minutes: float, start: float, tier: str = "default") -> list:
    step = 60.0 / rate_per_min
    return [
        event(start + i * step, f"q {i}", tier=tier) for i in range(int(minutes * rate_per_min))
    ]


def test_volume_fires_on_a_spike_above_the_own_baseline() -> None:
    baseline = steady(0.1, 12 * 60, START)  # one request every 10 minutes for 12 hours
    burst = steady(60, 10, START + 12 * 3600)
    assert score("volume", baseline + burst) == 1.0


def test_volume_fires_far_above_the_tier_rate() -> None:
    assert score("volume", steady(200, 10, START)) == 1.0


def test_volume_expected_rate_is_per_tier() -> None:
    events = steady(200, 10, START, tier="enterprise")
    assert score("volume", events, expected_per_minute={"default": 30, "enterprise": 500}) == 0.0


def test_volume_new_subject_at_a_steady_rate_is_no_spike() -> None:
    assert score("volume", steady(20, 30, START)) == 0.0


def test_volume_ignores_a_chat_user() -> None:
    assert score("volume", chat_user(1, days=3)) == 0.0


def test_volume_cluster_of_a_team_behind_one_nat_is_expected() -> None:
    assert score("volume", nat_team(4), scope="cluster") == 0.0


def test_timing_regularity_fires_on_a_metronome() -> None:
    rng = random.Random(7)
    events = [event(START + i * 10.0 + rng.uniform(-0.1, 0.1), f"q {i}") for i in range(60)]
    assert score("timing_regularity", events) == 1.0


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat_user(1, days=3), id="chat-user"),
        pytest.param(lambda: nightly_eval(3), id="nightly-eval"),
        pytest.param(lambda: nat_team(4), id="nat-team"),
    ],
)
def test_timing_regularity_ignores_people_and_sequential_scripts(traffic) -> None:
    assert score("timing_regularity", traffic()) < 0.5


def test_timing_regularity_needs_evidence() -> None:
    events = [event(START + i * 10.0, f"q {i}") for i in range(10)]
    assert score("timing_regularity", events) == 0.0


def test_timing_regularity_pauses_end_sessions() -> None:
    # Regular within sessions, but two-hour breaks are not intervals: still regular.
    events = [event(START + s * 7200 + i * 10.0, f"q {s} {i}") for s in range(4) for i in range(15)]
    assert score("timing_regularity", events) == 1.0


def test_activity_spread_fires_on_24_7_cluster_traffic() -> None:
    assert score("activity_spread", hydra(5), scope="cluster") >= 0.9


@pytest.mark.parametrize(
    ("traffic", "scope"),
    [
        pytest.param(lambda: nightly_eval(3), "account", id="nightly-eval"),
        pytest.param(lambda: nat_team(4), "cluster", id="nat-team"),
        pytest.param(lambda: chat_user(1, days=3), "account", id="chat-user"),
    ],
)
def test_activity_spread_ignores_daytime_and_nightly_jobs(traffic, scope) -> None:
    assert score("activity_spread", traffic(), scope=scope) == 0.0


def test_activity_spread_forgets_after_a_day() -> None:
    events = list(hydra(5))
    assert score("activity_spread", events, scope="cluster", now=events[-1].ts + 86400) == 0.0
