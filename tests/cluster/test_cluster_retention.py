"""Retention: an account never linked and unseen for longer than ``retention`` is
forgotten; a linked one never is. Every test runs on memory and on Redis."""

from __future__ import annotations

import tracemalloc

from cluster_harness import PAY, T0, Harness

from hydraguard.cluster.model import cluster_id

R = 100.0  # retention, seconds
SHY = {"device": ("dev-shared",)}  # 0.6: evidence, not a link


async def forget_all(index: object, now: float, accounts: int) -> list[str]:
    """Small sweeps, as the linker makes them, until every account was examined."""
    gone: list[str] = []
    for _ in range(accounts // 7 + 1):
        gone += await index.sweep(now, 7)  # type: ignore[attr-defined]
    return gone


async def test_an_idle_singleton_is_forgotten_and_a_newcomer_on_its_card_stands_alone(
    harness: Harness,
) -> None:
    index = await harness.make(retention=R)
    await index.observe("a", {PAY: ("card",)}, T0)
    assert await index.sweep(T0 + R, 10) == []  # idle exactly R: not longer than R
    assert await index.sweep(T0 + R + 0.5, 10) == ["a"]
    assert (await index.stats()).accounts == 0
    assert await index.observe("b", {PAY: ("card",)}, T0 + R + 1) == cluster_id("b")
    assert await index.cluster_of("a") == cluster_id("a")
    # Back again, "a" is a new account: it joins whoever holds the card now, after "b".
    assert await index.observe("a", {PAY: ("card",)}, T0 + R + 2) == cluster_id("b")
    assert (await index.stats()).accounts == 2


async def test_an_account_seen_within_retention_is_kept(harness: Harness) -> None:
    index = await harness.make(retention=R)
    await index.observe("a", {PAY: ("card",)}, T0)
    await index.observe("a", {PAY: ("card",)}, T0 + 60)
    assert await index.sweep(T0 + 150, 10) == []  # 90 s since it was last seen
    assert await index.observe("b", {PAY: ("card",)}, T0 + 150) == await index.cluster_of("a")


async def test_a_forgotten_account_takes_its_pending_evidence_along(harness: Harness) -> None:
    index = await harness.make(retention=R)
    await index.observe("a", {**SHY, "ja4": ("rare",)}, T0)
    await index.observe("b", SHY, T0 + 50)  # a-b: 0.6
    assert await index.sweep(T0 + 120, 10) == ["a"]  # b, seen 70 s ago, stays
    more = {"ja4": ("rare-2",), "subnet": ("198.51.100.0/24",)}
    await index.observe("a", more, T0 + 130)
    assert await index.observe("b", more, T0 + 131) == cluster_id("b")  # 0.5, not 1.1
    assert await index.observe("a", SHY, T0 + 132) == cluster_id("b")  # 0.5 + 0.6 links


async def test_linked_accounts_are_kept_however_idle(harness: Harness) -> None:
    index = await harness.make(retention=R)
    for name in ("card-1", "card-2"):  # linked by a strong value
        await index.observe(name, {PAY: ("card",)}, T0)
    weak = {**SHY, "ja4": ("rare",), "subnet": ("198.51.100.0/24",)}  # 1.1: an edge
    for name in ("weak-1", "weak-2"):
        await index.observe(name, weak, T0)
    await index.observe("org-1", {"org": ("acme",)}, T0)
    await index.observe("org-2", {"org": ("acme",)}, T0)
    await index.observe("hand-1", {PAY: ("h1",)}, T0)
    await index.observe("hand-2", {PAY: ("h2",)}, T0)
    await index.link("hand-1", "hand-2", "ticket", T0)
    await index.observe("apart-1", {PAY: ("p1",)}, T0)
    await index.observe("apart-2", {PAY: ("p2",)}, T0)
    await index.unlink("apart-1", "apart-2")  # singletons, but with a never-link constraint
    await index.observe("alone", {PAY: ("mine",)}, T0)
    before = {n: await index.cluster_of(n) for n in ("card-2", "weak-2", "org-2", "hand-2")}

    assert await forget_all(index, T0 + 100 * R, 11) == ["alone"]
    assert (await index.stats()).accounts == 10
    for name, cid in before.items():
        assert await index.cluster_of(name) == cid != cluster_id(name)
    info = await index.explain(before["weak-2"])
    assert info is not None and {e.signal for e in info.links[0].evidence} == {
        "device",
        "ja4",
        "subnet",
    }
    assert await index.observe("late", {PAY: ("card",)}, T0 + 100 * R) == before["card-2"]
    assert await index.observe("apart-2", {PAY: ("p1",)}, T0 + 100 * R) == cluster_id("apart-2")


async def test_retention_zero_keeps_every_account(harness: Harness) -> None:
    index = await harness.make(retention=0)
    await index.observe("a", {PAY: ("card",)}, T0)
    assert await index.sweep(T0 + 1e9, 10) == []
    assert await index.observe("b", {PAY: ("card",)}, T0 + 1e9) == await index.cluster_of("a")


async def test_forgetting_releases_what_the_accounts_held(harness: Harness) -> None:
    """Rounds of new accounts, each forgetting the last: what a round leaves behind is what
    a forgotten account costs. Their signals follow the default policy's mix: their own
    card and device, a JA4 and a /24 shared by ten (weak evidence among them, no link)."""

    async def round_of(r: int, n: int) -> tuple[int, dict[str, int]]:
        now = T0 + r * (R + 1)
        for i in range(n):
            signals = {
                PAY: (f"card-{r}-{i}",),
                "device": (f"dev-{r}-{i}",),
                "ja4": (f"ja4-{r}-{i // 10}",),
                "subnet": (f"198.{r}.{i // 10}.0/24",),
            }
            assert await index.observe(f"acct-{r}-{i}", signals, now) == cluster_id(f"acct-{r}-{i}")
        forgotten = await forget_all(index, now, 2 * n)
        assert (await index.stats()).accounts == n
        assert not any(name.startswith(f"acct-{r}-") for name in forgotten)
        return await harness.footprint()

    tracemalloc.start()
    try:
        index = await harness.make(retention=R)
        n = 300
        empty, _ = await harness.footprint()
        first, _ = await round_of(0, n)
        second, keys_second = await round_of(1, n)
        third, keys_third = await round_of(2, n)
    finally:
        tracemalloc.stop()
    held, left = (first - empty) / n, (third - second) / n
    assert held > 1000, held  # what an account costs while it is kept (about 3 KB)
    # What stays per forgotten account: memory, its number's slots in a few lists
    # (retention.py), plus noise; Redis: nothing but allocator noise.
    assert left < (150 if harness.kind == "memory" else 20), (held, left)
    if harness.kind == "redis":
        # Round 1's keys were all released: round 2 left exactly as many keys and fields.
        assert len(keys_third) == len(keys_second) > 3 * n  # seen:, v:card, v:device
        assert sorted(keys_third.values()) == sorted(keys_second.values())
    # Round 1's card is free again: a newcomer holding it stands alone.
    assert await index.observe("b", {PAY: ("card-1-0",)}, T0 + 3 * R) == cluster_id("b")
