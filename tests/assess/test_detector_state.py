"""Detector states: bounded, JSON round trip, and the same answers after a round trip."""

from __future__ import annotations

import functools
import gc
import itertools
import json
import random
import tracemalloc

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


@pytest.mark.parametrize("max_distance", [0, 3, 5, 9, 16])
def test_template_repetition_flags_exactly_the_near_duplicates_of_its_window(
    max_distance: int,
) -> None:
    # Each prompt is flagged when, and only when, a fingerprint still in the window (the
    # oldest has left a full one) is within max_distance bits: checked against a plain list.
    det = detector("template_repetition", window=8, max_distance=max_distance)
    state = det.new_state()
    rng = random.Random(max_distance)
    bases = [rng.getrandbits(64) for _ in range(5)]
    window: list[int] = []
    for i in range(600):
        fp = rng.choice(bases)
        for _ in range(rng.choice([0, 1, 2, 3, 4, 6, 9, 12, 16, 20])):
            fp ^= 1 << rng.randrange(64)
        if len(window) == 8:
            window.pop(0)
        expected = any((fp ^ other).bit_count() <= max_distance for other in window)
        det.observe(state, assess_traffic.event(START + i, "p", template=fp))
        window.append(fp)
        flags = state.to_dict()["flags"]
        newest = (state.pos - 1) % 8 if len(flags) == 8 else len(flags) - 1
        assert flags[newest] == expected, i
        assert state.dups == sum(flags)
        assert sorted(state.to_dict()["fps"]) == sorted(window)


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


def test_a_subjects_detector_states_stay_small_at_steady_state() -> None:
    # Up to max_subjects accounts and as many clusters each hold all eight states: at
    # 100,000 of each, every KB per subject is 200 MB of the gateway's memory. Full windows
    # of distinct templates, prompts and temperatures (the heaviest steady state) must stay
    # under 10 KB a subject in all (dicts and int objects per window entry took 90 KB).
    detectors = [detector(name) for name in NAMES]
    rng = random.Random(7)
    subjects = 100
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        states = [[det.new_state() for det in detectors] for _ in range(subjects)]
        for i in range(300):
            for s, row in enumerate(states):
                event = assess_traffic.event(
                    START + i * 97 + s,
                    f"prompt {rng.random()}",
                    template=rng.getrandbits(64),
                    temperature=rng.choice([0.2, 0.5, 0.7, 1.0, 1.3]),
                    max_tokens=rng.choice([1, 64, 4096]),
                )
                for det, state in zip(detectors, row, strict=True):
                    det.observe(state, event)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert held / subjects < 10_000, f"{held / subjects:.0f} bytes per subject"
