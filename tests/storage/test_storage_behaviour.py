"""Storage behaviour, the same tests on memory, on Redis, on a three-node Redis Cluster and
through Sentinel (``make_storage`` is parametrized through ``storage_uri``).

Time is passed explicitly (``now``), so window arithmetic is exact and nothing sleeps.
Redis settles in the background: ``drain()`` before reading usage after a settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hydraguard.storage.base import Charge, Check, Lease, Storage
from shared_redis import REDIS_URL

W = 60  # window seconds used throughout
T0 = 6_000_000.0  # a window boundary (T0 % W == 0), far from 0 so window ids are realistic
MakeStorage = Callable[..., Storage]


pytestmark = pytest.mark.parametrize(
    "storage_uri",
    [
        pytest.param("memory://", id="memory"),
        pytest.param(REDIS_URL, id="redis", marks=pytest.mark.redis),
        # conftest's storage_uri turns these into the session's servers (tests/storage/conftest.py)
        pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
        pytest.param("redis-sentinel", id="redis-sentinel", marks=pytest.mark.redis),
    ],
    indirect=True,
)


def window_check(key: str, limit: int, cost: int = 1, *, shadow: bool = False) -> Check:
    return Check(f"hgtest:{key}", limit, W, cost, shadow)


def lease_check(key: str, limit: int, *, shadow: bool = False) -> Check:
    return Check(f"hgtest:{key}", limit, 0, 1, shadow)


async def test_all_or_nothing_when_one_check_refuses(make_storage: MakeStorage) -> None:
    storage = make_storage()
    roomy, tight = window_check("roomy", 100, 5), window_check("tight", 1)
    slots = lease_check("c", 10)
    assert (await storage.acquire([tight], T0 + 1, "l0", 30)).admitted
    verdict = await storage.acquire([roomy, tight, slots], T0 + 2, "l1", 30)
    assert not verdict.admitted and not verdict.charged
    assert verdict.refusing == [1]
    assert await storage.usage([roomy, tight, slots], T0 + 2) == [0.0, 1.0, 0.0]


async def test_admitted_decision_charges_every_check(make_storage: MakeStorage) -> None:
    storage = make_storage()
    checks = [window_check("a", 100, 7), window_check("b", 10), lease_check("c", 3)]
    verdict = await storage.acquire(checks, T0 + 1, "l1", 30)
    assert verdict.admitted and verdict.charged
    assert verdict.usage == [7.0, 1.0, 1.0]
    assert verdict.window_ids[:2] == [int(T0 // W)] * 2
    assert verdict.reset[:2] == [pytest.approx(W - 1)] * 2
    assert await storage.usage(checks, T0 + 1) == [7.0, 1.0, 1.0]


async def test_sliding_window_counter_math(make_storage: MakeStorage) -> None:
    storage = make_storage()
    check = window_check("slide", 1000, 40)
    await storage.acquire([check], T0 + 30, "l", 30)  # 40 in window 0
    # 15 s into window 1: previous weighs (60 - 15) / 60.
    assert await storage.usage([check], T0 + 75) == [pytest.approx(40 * 45 / 60)]
    bigger = window_check("slide", 1000, 20)
    verdict = await storage.acquire([bigger], T0 + 75, "l", 30)
    assert verdict.usage == [pytest.approx(40 * 45 / 60 + 20)]
    assert await storage.usage([check], T0 + 90) == [pytest.approx(40 * 30 / 60 + 20)]
    # Two windows later the first one weighs nothing and the second is "previous".
    assert await storage.usage([check], T0 + 150) == [pytest.approx(20 * 30 / 60)]
    assert await storage.usage([check], T0 + 181) == [0.0]


@pytest.mark.parametrize(
    ("first_cost", "asked_at", "expected_wait"),
    [
        # Still in the next window: wait until 80 * (60 - e) / 60 <= 50, i.e. e = 22.5.
        pytest.param(80, T0 + 70, 12.5, id="previous-decays"),
        # Same window, current alone is too much: next window plus decay of 90 to 50.
        pytest.param(90, T0 + 20, 40 + 60 * (1 - 50 / 90), id="next-window"),
    ],
)
async def test_retry_after_is_exactly_when_the_request_fits(
    make_storage: MakeStorage, first_cost: int, asked_at: float, expected_wait: float
) -> None:
    storage = make_storage()
    await storage.acquire([window_check("ra", 100, first_cost)], T0 + 10, "l", 30)
    ask = window_check("ra", 100, 50)
    refused = await storage.acquire([ask], asked_at, "l", 30)
    assert not refused.admitted
    wait = refused.retry_after[0]
    assert wait == pytest.approx(expected_wait)
    assert not (await storage.acquire([ask], asked_at + wait - 0.05, "l", 30)).admitted
    assert (await storage.acquire([ask], asked_at + wait + 1e-6, "l", 30)).admitted


async def test_cost_above_the_limit_never_fits_and_waits_a_window(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    verdict = await storage.acquire([window_check("huge", 100, 101)], T0 + 5, "l", 30)
    assert not verdict.admitted
    assert verdict.retry_after == [float(W)]


async def test_fixed_window_mode(make_storage: MakeStorage) -> None:
    storage = make_storage(sliding=False)
    check = window_check("fixed", 100, 80)
    assert (await storage.acquire([check], T0 + 10, "l", 30)).admitted
    refused = await storage.acquire([window_check("fixed", 100, 50)], T0 + 20, "l", 30)
    assert not refused.admitted
    assert refused.retry_after == [pytest.approx(40.0)]  # the rest of the window
    # The previous window weighs nothing: at once after the boundary it all fits again.
    assert await storage.usage([check], T0 + 60) == [0.0]
    assert (await storage.acquire([check], T0 + 60, "l", 30)).admitted


async def test_shadow_checks_never_refuse_and_are_not_charged_when_they_would(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    # One subject: the enforced check's charge writes it while the shadow check is left.
    enforced, shadow = window_check("{one}:e", 100), window_check("{one}:s", 1, shadow=True)
    first = await storage.acquire([enforced, shadow], T0 + 1, "l1", 30)
    assert first.admitted and first.retry_after == [0.0, 0.0]
    assert first.usage == [1.0, 1.0]  # everything fitted: the shadow check counts too
    second = await storage.acquire([enforced, shadow], T0 + 2, "l2", 30)
    assert second.admitted and second.charged
    assert second.refusing == [1]  # reported, so the caller can log a shadow denial
    assert await storage.usage([enforced, shadow], T0 + 2) == [2.0, 1.0]
    # In the next window the shadow check, left uncharged again, keeps the count it had:
    # a correction of its first reservation still reaches it (now the previous window).
    later = await storage.acquire([enforced, shadow], T0 + W + 1, "l5", 30)
    assert later.charged and later.refusing == [1]
    storage.settle([Charge(shadow.key, W, first.window_ids[1], 2)], [], T0 + W + 2)
    await storage.drain()
    left = W - 3  # of the previous window, 3 s into this one
    assert await storage.usage([enforced, shadow], T0 + W + 3) == [2 * left / W + 1, 3 * left / W]
    shadow_slots = lease_check("sc", 1, shadow=True)
    await storage.acquire([shadow_slots], T0 + 3, "l3", 30)
    over = await storage.acquire([shadow_slots], T0 + 3, "l4", 30)
    assert over.admitted and over.refusing == [0]
    assert await storage.usage([shadow_slots], T0 + 3) == [1.0]


async def test_settle_corrects_tokens_up_and_down_with_a_floor_of_zero(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    check = window_check("tok", 10_000, 500)
    verdict = await storage.acquire([check], T0 + 5, "l", 30)
    charge = Charge(check.key, W, verdict.window_ids[0], 0)
    storage.settle([Charge(charge.key, W, charge.window_id, -300)], [], T0 + 6)
    await storage.drain()
    assert await storage.usage([check], T0 + 6) == [200.0]
    storage.settle([Charge(charge.key, W, charge.window_id, +1000)], [], T0 + 7)
    await storage.drain()
    assert await storage.usage([check], T0 + 7) == [1200.0]
    storage.settle([Charge(charge.key, W, charge.window_id, -5000)], [], T0 + 8)
    await storage.drain()
    assert await storage.usage([check], T0 + 8) == [0.0]


async def test_settle_lands_in_the_reserving_window_after_it_became_previous(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    check = window_check("late", 10_000, 400)
    verdict = await storage.acquire([check], T0 + 50, "l", 30)
    # A request in the next window, so the reservation's window is now the previous one.
    await storage.acquire([window_check("late", 10_000, 10)], T0 + 65, "l2", 30)
    storage.settle([Charge(check.key, W, verdict.window_ids[0], -100)], [], T0 + 70)
    await storage.drain()
    # previous 300 weighs (60 - 30) / 60 at T0 + 90; the current window keeps its 10.
    assert await storage.usage([check], T0 + 90) == [pytest.approx(300 * 30 / 60 + 10)]


async def test_concurrency_lease_released_by_settle(make_storage: MakeStorage) -> None:
    storage = make_storage()
    slots = lease_check("conc", 2)
    assert (await storage.acquire([slots], T0, "a", 30)).admitted
    assert (await storage.acquire([slots], T0 + 1, "b", 30)).admitted
    full = await storage.acquire([slots], T0 + 2, "c", 30)
    assert not full.admitted
    assert full.retry_after == [pytest.approx(28.0)]  # until lease "a" expires
    storage.settle([], [Lease(slots.key, "a")], T0 + 3)
    await storage.drain()
    assert await storage.usage([slots], T0 + 3) == [1.0]
    assert (await storage.acquire([slots], T0 + 3, "c", 30)).admitted


async def test_a_correction_beyond_64_bits_still_settles_the_batch(
    make_storage: MakeStorage,
) -> None:
    # Settlements of one event-loop turn travel together: one absurd correction must not
    # fail the others' (on Redis it did: its leases were then held until their TTL).
    storage = make_storage()
    tokens, slots = window_check("huge", 10**40, 10), lease_check("huge-conc", 2)
    first = await storage.acquire([tokens, slots], T0, "a", 30)
    assert (await storage.acquire([slots], T0, "b", 30)).admitted
    storage.settle([Charge(tokens.key, W, first.window_ids[0], 10**30)], [], T0 + 1)
    storage.settle([], [Lease(slots.key, "a"), Lease(slots.key, "b")], T0 + 1)
    await storage.drain()
    assert await storage.usage([tokens, slots], T0 + 1) == [pytest.approx(1e30), 0.0]


async def test_concurrency_lease_expires_after_its_ttl(make_storage: MakeStorage) -> None:
    storage = make_storage()
    slots = lease_check("ttl", 1)
    assert (await storage.acquire([slots], T0, "dead-process", 30)).admitted
    assert not (await storage.acquire([slots], T0 + 29.9, "x", 30)).admitted
    assert await storage.usage([slots], T0 + 29.9) == [1.0]
    assert await storage.usage([slots], T0 + 30.1) == [0.0]
    assert (await storage.acquire([slots], T0 + 30.1, "y", 30)).admitted


@pytest.mark.parametrize("kind", ["window", "concurrency"])
async def test_200_concurrent_acquires_at_a_limit_of_50_admit_exactly_50(
    make_storage: MakeStorage, kind: str
) -> None:
    storage = make_storage()
    check = window_check("race", 50) if kind == "window" else lease_check("race", 50)
    other = window_check("race-other", 1_000_000, 3)
    verdicts = await asyncio.gather(
        *(storage.acquire([other, check], T0 + 1, f"l{i}", 30) for i in range(200))
    )
    assert sum(v.admitted for v in verdicts) == 50
    # All or nothing under contention too: the other limit saw only the 50 admitted.
    assert await storage.usage([other, check], T0 + 1) == [150.0, 50.0]


async def test_clear_removes_counters_and_leases_under_a_prefix(make_storage: MakeStorage) -> None:
    storage = make_storage()
    gone, kept = window_check("clear:a", 10), lease_check("keep", 10)
    await storage.acquire([gone, lease_check("clear:c", 5), kept], T0 + 1, "l", 30)
    assert await storage.clear("hgtest:clear:") >= 2
    assert await storage.usage([gone, lease_check("clear:c", 5), kept], T0 + 1) == [0.0, 0.0, 1.0]


async def test_shared_values_are_stored_replaced_expired_and_cleared(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    await storage.put_values([("hgtest:{a:v}:risk", b"one", 30), ("hgtest:{a:w}:risk", b"w", 0.05)])
    await storage.put_values([("hgtest:{a:v}:risk", b"two", 30)])
    assert await storage.get_values(["hgtest:{a:v}:risk", "hgtest:{a:w}:risk", "hgtest:none"]) == [
        b"two",
        b"w",
        None,
    ]
    await asyncio.sleep(0.15)  # the short-lived value expires on its own
    assert await storage.get_values(["hgtest:{a:w}:risk"]) == [None]
    assert await storage.clear("hgtest:{a:v}") >= 0
    assert await storage.get_values(["hgtest:{a:v}:risk"]) == [None]


# --- found by test_storage_parity.py: each fails without its fix -------------------------


async def test_a_clock_behind_a_counters_window_counts_into_that_window(
    make_storage: MakeStorage,
) -> None:
    # Replicas whose clocks disagree by a second around a window's end: the one behind
    # counts into the window the other opened (Redis replaced it with an empty older one),
    # and reading at its time neither loses nor hides that window (memory's read wiped it).
    storage = make_storage()
    check = window_check("skew", 2)
    assert (await storage.acquire([check], T0 + W + 0.5, "a", 30)).admitted
    late = await storage.acquire([check], T0 + W - 0.5, "b", 30)
    assert late.admitted and late.usage == [2.0]
    assert late.window_ids == [int(T0 // W) + 1]
    assert await storage.usage([check], T0 + W - 0.5) == [2.0]
    refused = await storage.acquire([check], T0 + W - 0.5, "c", 30)
    # Half a second to the counter's window, then as there: 2 of 2 in the current window
    # fit one more once the previous window weighs 1, 30 s into the next one.
    assert refused.retry_after == [pytest.approx(0.5 + W + W / 2)]
    assert refused.reset == [pytest.approx(0.5 + W)]
    assert await storage.usage([check], T0 + W + 1) == [2.0]


async def test_a_counter_moves_to_a_new_window_only_when_charged_in_it(
    make_storage: MakeStorage,
) -> None:
    # A decision that reads a counter in a new window without charging it (here refused in
    # shadow while its subject's other counter is charged) must not move it there: a clock
    # a second behind still counts in the old window (memory and Redis stored it rolled).
    storage = make_storage()
    await storage.acquire([window_check("{m}:r", 100, 3)], T0 + W - 2, "a", 30)
    shadowed, tokens = window_check("{m}:r", 1, shadow=True), window_check("{m}:t", 1000, 5)
    moved = await storage.acquire([shadowed, tokens], T0 + W + 0.5, "b", 30)
    assert moved.admitted and moved.refusing == [0]
    late = await storage.acquire([window_check("{m}:r", 100)], T0 + W - 0.5, "c", 30)
    assert late.window_ids == [int(T0 // W)]
    assert late.usage == [4.0]


async def test_usage_is_a_pure_read(make_storage: MakeStorage) -> None:
    # Reading ahead must not purge leases still live now (memory's read did).
    storage = make_storage()
    slots = lease_check("pure", 3)
    await storage.acquire([slots], T0, "a", 30)
    assert await storage.usage([slots], T0 + 60) == [0.0]
    assert await storage.usage([slots], T0 + 1) == [1.0]


async def test_a_decision_counts_only_live_leases(make_storage: MakeStorage) -> None:
    # A lease past its TTL is not held (memory reported it while the set was not full).
    storage = make_storage()
    slots = lease_check("live", 3)
    await storage.acquire([slots], T0, "dead-process", 1)
    verdict = await storage.acquire([slots], T0 + 2, "b", 30)
    assert verdict.admitted and verdict.usage == [1.0]


async def test_a_settlement_judges_leases_by_its_own_clock(make_storage: MakeStorage) -> None:
    # Redis applied every batch with the latest `now` any earlier batch had: once the
    # clock stepped back, releasing one lease dropped the others as expired.
    storage = make_storage()
    slots = lease_check("settle-clock", 5)
    storage.settle([], [Lease(slots.key, "gone")], T0 + 100)
    await storage.drain()
    assert (await storage.acquire([slots], T0 + 10, "a", 30)).admitted
    assert (await storage.acquire([slots], T0 + 10, "b", 30)).admitted
    storage.settle([], [Lease(slots.key, "b")], T0 + 11)
    await storage.drain()
    assert await storage.usage([slots], T0 + 12) == [1.0]


async def test_lifting_a_spent_block_lifts_none(make_storage: MakeStorage) -> None:
    # clear_flag said True for a flag past its time (the admin API's was_blocked).
    storage = make_storage()
    flag = Check("hgtest:{f}:b", 1, -1, 1)
    await storage.set_flag(flag.key, 5, T0)
    assert not await storage.clear_flag(flag.key, T0 + 10)
    await storage.set_flag(flag.key, 5, T0 + 20)
    assert not (await storage.acquire([flag], T0 + 21, "l", 30)).admitted
    assert await storage.clear_flag(flag.key, T0 + 21)
    assert (await storage.acquire([flag], T0 + 22, "l", 30)).admitted
