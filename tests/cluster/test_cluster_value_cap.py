"""``max_values_per_account``: an account holds at most that many values of a signal;
before it records one more, its oldest is released (as forgetting releases every value:
off the holders, with its pending weak evidence) while links already made stay. Every
test runs on memory and on Redis."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cluster_harness import PAY, T0, Harness

from hydraguard.cluster.config import ClusteringConfig, SignalSpec, default_signals
from hydraguard.cluster.model import cluster_id

SUBNET = {"subnet": ("198.51.100.0/24",)}  # 0.3
RARE = {"ja4": ("rare",)}  # 0.2: with the subnet 0.5, with a shared device (0.6) a link


def capped(**caps: int) -> ClusteringConfig:
    """The default signals, with the given caps (the others keep the default 64)."""
    signals = default_signals()
    for name, cap in caps.items():
        signals[name] = signals[name].model_copy(update={"max_values_per_account": cap})
    return ClusteringConfig(signals=signals)


def per_signal(held: list[tuple[str, str]]) -> dict[str, int]:
    return dict(Counter(signal for signal, _ in held))


async def test_an_account_rotating_values_holds_at_most_the_cap_per_signal(
    harness: Harness,
) -> None:
    index = await harness.make(capped(device=4, ja4=3))
    for i in range(50):
        signals = {"device": (f"dev-{i}",), "ja4": (f"ja4-{i}",), **SUBNET}
        await index.observe("a", signals, T0 + i)
    held = await harness.held(index, "a")
    assert per_signal(held) == {"device": 4, "ja4": 3, "subnet": 1}
    # The oldest went first: it holds the values it showed last.
    assert {v for s, v in held if s == "device"} == {f"dev-{i}" for i in range(46, 50)}
    assert (await index.stats()).released_values == (50 - 4) + (50 - 3)


async def test_values_first_seen_together_go_in_the_order_of_their_text(
    harness: Harness,
) -> None:
    index = await harness.make(capped(device=2))
    await index.observe("a", {"device": ("dev-b", "dev-a")}, T0)
    await index.observe("a", {"device": ("dev-c",)}, T0 + 1)
    assert await harness.held(index, "a") == [("device", "dev-b"), ("device", "dev-c")]


async def test_a_rotated_out_weak_value_no_longer_links_its_former_co_holder(
    harness: Harness,
) -> None:
    index = await harness.make(capped(device=2))
    await index.observe("a", {"device": ("dev-shared",)}, T0)
    await index.observe("b", {"device": ("dev-shared",)}, T0 + 1)  # a-b: 0.6 pending
    await index.observe("a", {"device": ("dev-1",)}, T0 + 2)
    await index.observe("a", {"device": ("dev-2",)}, T0 + 3)  # dev-shared released
    await index.observe("a", {**SUBNET, **RARE}, T0 + 4)
    # 0.5: the released device's 0.6 is no longer evidence (1.1 would link).
    assert await index.observe("b", {**SUBNET, **RARE}, T0 + 5) == cluster_id("b")
    # Shown again, it is recorded afresh and counts once more.
    linked = await index.observe("a", {"device": ("dev-shared",)}, T0 + 6)
    assert linked == await index.cluster_of("b") != cluster_id("b")
    info = await index.explain(linked)
    assert info is not None and info.members == ("a", "b")
    assert {(e.signal, e.value, e.first_seen) for e in info.links[0].evidence} == {
        ("device", "dev-shared", T0 + 6),
        ("subnet", "198.51.100.0/24", T0 + 5),
        ("ja4", "rare", T0 + 5),
    }


async def test_a_value_shown_again_counts_as_a_fresh_observation(harness: Harness) -> None:
    """Released and shown again, a value adds its weight once: the index ends as one that
    only ever saw the final values (0.6 + 0.3 stays below 1.0; counted twice it links)."""
    config = capped(device=1)
    rotated, fresh = await harness.make(config), await harness.make(config)
    await rotated.observe("b", {"device": ("dev-shared",)}, T0)
    await rotated.observe("a", {"device": ("dev-shared",)}, T0 + 1)
    await rotated.observe("a", {"device": ("dev-own",)}, T0 + 2)  # releases dev-shared
    await rotated.observe("a", {"device": ("dev-shared",)}, T0 + 3)  # releases dev-own
    await fresh.observe("b", {"device": ("dev-shared",)}, T0)
    await fresh.observe("a", {"device": ("dev-shared",)}, T0 + 3)
    results: list[Any] = []
    for index in (rotated, fresh):
        evidence = await harness.evidence(index)
        await index.observe("a", SUBNET, T0 + 4)
        apart = await index.observe("b", SUBNET, T0 + 5)  # 0.9
        await index.observe("a", RARE, T0 + 6)
        linked = await index.observe("b", RARE, T0 + 7)  # 1.1
        held = await harness.held(index, "a")
        results.append((evidence, apart, linked, await index.explain(linked), held))
    assert results[0][:3] == ({("a", "b"): 0.6}, cluster_id("b"), cluster_id("b"))
    assert results[0] == results[1]


async def test_links_a_strong_value_made_stay_after_it_is_released(harness: Harness) -> None:
    index = await harness.make(capped(payment=2))
    await index.observe("a", {PAY: ("card-1",)}, T0)
    cid = await index.observe("b", {PAY: ("card-1",)}, T0 + 1)
    assert cid == cluster_id("a")
    for n in (2, 3):  # a rotates its cards: card-1 goes, card-2 and card-3 stay
        assert await index.observe("a", {PAY: (f"card-{n}",)}, T0 + n) == cid
    assert [v for _, v in await harness.held(index, "a")] == ["card-2", "card-3"]
    assert await index.cluster_of("b") == cid
    # b holds card-1 still: a newcomer on it joins the cluster through b.
    assert await index.observe("c", {PAY: ("card-1",)}, T0 + 4) == cid
    assert await index.observe("d", {PAY: ("card-3",)}, T0 + 5) == cid
    for n in (4, 5):
        assert await index.observe("a", {PAY: (f"card-{n}",)}, T0 + 5 + n) == cid
    # card-2 was a's alone: released, nobody holds it and a newcomer on it stands alone;
    # card-3 is d's too, so it still links.
    assert await index.observe("e", {PAY: ("card-2",)}, T0 + 11) == cluster_id("e")
    assert await index.observe("f", {PAY: ("card-3",)}, T0 + 12) == cid
    stats = await index.stats()
    assert (stats.clusters, stats.sizes, stats.released_values) == (1, {"3-5": 1}, 3)
    info = await index.explain(cid)
    assert info is not None and info.members == ("a", "b", "c", "d", "f")


async def test_the_cost_of_an_edge_does_not_grow_with_the_accounts_history(
    harness: Harness,
) -> None:
    """An account showed 1,000 devices; the edge it then forms reads a record of the
    default cap (64 devices) plus its other values, not its history: Redis runs one
    HEXISTS per field of that record (HKEYS seen:A in ``add_edge``); memory intersects
    the two records."""
    index = await harness.make()  # the default cap, 64
    history = 1000
    for i in range(history):
        await index.observe("a", {"device": (f"dev-{i}",), **SUBNET, **RARE}, T0 + i)
    await index.observe("b", {"device": ("dev-shared",), **SUBNET, **RARE}, T0 + history)
    held = await harness.held(index, "a")
    assert per_signal(held) == {"device": 64, "subnet": 1, "ja4": 1}
    before = await harness.redis_calls("hexists") if harness.kind == "redis" else 0
    linked = await index.observe("a", {"device": ("dev-shared",)}, T0 + history + 1)  # 1.1
    if harness.kind == "redis":
        # At most one per field of its record (66; without the cap 1,002), plus the
        # account's registration and the edge's existence.
        hexists = await harness.redis_calls("hexists") - before
        assert 0 < hexists <= 66 + 2, hexists
    assert linked == await index.cluster_of("b") == cluster_id("a")  # the earlier stays
    assert (await index.stats()).released_values == history + 1 - 64


async def test_a_saturated_strong_value_links_nobody_new_once_holders_let_go(
    harness: Harness,
) -> None:
    signals = default_signals()
    signals[PAY] = SignalSpec(
        header="x-payment-fingerprint", weight=1.0, max_fanout=2, max_values_per_account=1
    )
    index = await harness.make(ClusteringConfig(signals=signals))
    await index.observe("a", {PAY: ("shared",)}, T0)
    cid = await index.observe("b", {PAY: ("shared",)}, T0 + 1)
    assert await index.observe("c", {PAY: ("shared",)}, T0 + 2) == cluster_id("c")  # saturates
    await index.observe("a", {PAY: ("own",)}, T0 + 3)  # a lets go of it: b alone holds it
    assert await index.observe("d", {PAY: ("shared",)}, T0 + 4) == cluster_id("d")
    assert await index.cluster_of("b") == await index.cluster_of("a") == cid
    assert (await index.stats()).saturated_values == 1
