"""Detector states: bounded, JSON round trip, and the same answers after a round trip."""

from __future__ import annotations

import functools
import itertools
import json

import assess_traffic
import pytest
from assess_traffic import START, chat_user, detector, hydra, prober

from hydraguard.assess.detectors import ramp
from hydraguard.assess.detectors.base import Ring

NAMES = [
    "template_repetition",
    "reasoning_elicitation",
    "extraction_params",
    "output_appetite",
    "volume",
    "timing_regularity",
    "activity_spread",
    "diversity",
]


def mixed_traffic(n: int) -> list:
    events = [
        *itertools.islice(hydra(1, accounts=1), n // 2),
        *prober(2, n=n // 4, start=START + 3600),
        *chat_user(3, days=2, start=START),
    ]
    return sorted(events, key=lambda e: e.ts)[:n]


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_a_json_round_trip(name: str) -> None:
    det = detector(name)
    events = mixed_traffic(400)
    original = det.new_state()
    for event in events[:200]:
        det.observe(original, event)
    restored = det.load_state(json.loads(json.dumps(original.to_dict())))
    for event in events[200:]:
        det.observe(original, event)
        det.observe(restored, event)
        assert det.score(restored, event.ts) == pytest.approx(det.score(original, event.ts))
    assert restored.to_dict() == original.to_dict()


@functools.cache
def long_campaign() -> tuple:
    return tuple(hydra(9, accounts=1, hours=3, period=1.0))


@pytest.mark.parametrize("name", NAMES)
def test_state_stays_bounded(name: str) -> None:
    det = detector(name)
    state = det.new_state()
    sizes = []
    for i, event in enumerate(long_campaign()):
        det.observe(state, event)
        if i in (1000, 10000):
            sizes.append(len(json.dumps(state.to_dict())))
    assert sizes[1] <= sizes[0] * 1.1 + 64


@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_state_scores_zero(name: str) -> None:
    det = detector(name)
    assert det.score(det.new_state(), START) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"), [(0.0, 0.0), (0.2, 0.0), (0.5, 0.5), (0.8, 1.0), (3.0, 1.0)]
)
def test_ramp(value: float, expected: float) -> None:
    assert ramp(value, 0.2, 0.8) == pytest.approx(expected)


def test_activity_spread_totals_stay_exact_across_gaps() -> None:
    # Moving the window's end forgets only the slots skipped over, incrementally:
    # the totals must equal a recount after every kind of gap.
    det = detector("activity_spread")
    state = det.new_state()
    ts = START
    for gap in [0, 60, 3600, 5 * 3600, 1800, 23 * 3600, 24 * 3600, 30 * 3600, 7200, 120] * 3:
        ts += gap
        det.observe(state, assess_traffic.event(ts, "hello"))
        totals = (state.total, state.active, state.clogc)
        state.recount()
        assert totals == pytest.approx((state.total, state.active, state.clogc))


def test_template_repetition_index_matches_its_window() -> None:
    # The band index (counts and holder links) must describe exactly the window.
    det = detector("template_repetition", window=8)
    state = det.new_state()
    for i, request in enumerate(long_campaign()[:200]):
        det.observe(state, request)
        expected: dict[int, int] = {}
        for fp in state.fps:
            for key in det._keys(fp):
                expected[key] = expected.get(key, 0) + 1
        assert {k: v >> 16 for k, v in state.index.items()} == expected, i


@pytest.mark.parametrize("capacity", [1, 4, 7])
def test_a_new_ring_behaves_as_one_built_from_no_values(capacity: int) -> None:
    # Ring(capacity) skips the copying a restored ring needs; it must not differ from one.
    fresh, built = Ring(capacity), Ring(capacity, [], pos=3)
    for value in [0.5, 2.0, 0.0, 7.25, 1.0, 3.5, 0.125, 9.0, 4.0][: 2 * capacity + 1]:
        assert (len(fresh), fresh.mean(), fresh.to_dict()) == (
            len(built),
            built.mean(),
            built.to_dict(),
        )
        fresh.push(value)
        built.push(value)
    assert fresh.total == built.total and fresh.to_dict() == built.to_dict()
