"""Behaviour of the cluster index; every test runs on memory and on Redis."""

from __future__ import annotations

from cluster_harness import PAY, T0, Harness

from hydraguard.cluster.config import (
    ClusteringConfig,
    SignalSpec,
    TemplateSource,
    default_signals,
)
from hydraguard.cluster.model import cluster_id


def template(name: str) -> tuple[str, ...]:
    return tuple(f"{name}:b{band}" for band in range(4))


async def test_a_shared_payment_fingerprint_links(harness: Harness) -> None:
    index = await harness.make()
    a = await index.observe("a", {PAY: ("card-1",)}, T0)
    b = await index.observe("b", {PAY: ("card-1",)}, T0 + 1)
    c = await index.observe("c", {PAY: ("card-2",)}, T0 + 2)
    assert a == cluster_id("a")  # a singleton has its own id
    assert b == a == await index.cluster_of("a") == await index.cluster_of("b")
    assert c != a and c == cluster_id("c")
    assert await index.cluster_of("never-seen") == cluster_id("never-seen")


async def test_templates_and_subnet_link_once_their_weights_reach_the_threshold(
    harness: Harness,
) -> None:
    four_bands = SignalSpec(template=TemplateSource(bands=4), weight=0.3, max_fanout=200)
    config = ClusteringConfig(signals={**default_signals(), "template": four_bands})
    index = await harness.make(config)  # template 0.3 per shared template, subnet 0.3
    net = {"subnet": ("198.51.100.0/24",)}
    await index.observe("a", {**net, "template": template("t1")}, T0)
    b = await index.observe("b", {**net, "template": template("t1")}, T0)
    assert b == cluster_id("b")  # 0.6: one template and a subnet say little
    await index.observe("a", {"template": template("t2")}, T0 + 1)
    b = await index.observe("b", {"template": template("t2")}, T0 + 1)
    assert b == cluster_id("b")  # 0.9
    await index.observe("a", {"template": template("t3")}, T0 + 2)
    b = await index.observe("b", {"template": template("t3")}, T0 + 2)
    assert b == await index.cluster_of("a") != cluster_id("b")  # 1.2


async def test_partial_template_match_counts_in_proportion(harness: Harness) -> None:
    index = await harness.make(
        threshold=1.0,
        signals={
            "tpl": {"template": {"bands": 4}, "weight": 0.8},
            "net": {"client_ip": {}, "weight": 0.4},
        },
    )
    await index.observe("a", {"tpl": ("x0", "x1", "x2", "x3"), "net": ("n",)}, T0)
    b = await index.observe("b", {"tpl": ("x0", "x1", "y2", "y3"), "net": ("n",)}, T0)
    assert b == cluster_id("b")  # 2 bands of 4: 0.4 + 0.4 < 1
    c = await index.observe("c", {"tpl": ("x0", "x1", "x2", "y3"), "net": ("n",)}, T0)
    assert c == await index.cluster_of("a")  # 3 bands: 0.6 + 0.4 = 1.0 reaches it


async def test_a_ja4_shared_by_thousands_never_links(harness: Harness) -> None:
    index = await harness.make()
    accounts = 300 if harness.kind == "redis" else 3000
    for i in range(accounts):
        cid = await index.observe(f"u{i}", {"ja4": ("t13d1516h2_common",)}, T0 + i)
        assert cid == cluster_id(f"u{i}")
    stats = await index.stats()
    assert stats.clusters == 0 and stats.saturated_values == 1


async def test_an_explicit_org_unions_outright_and_placeholders_do_not(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b", "c"):
        await index.observe(name, {"org": ("acme",)}, T0)
    await index.observe("x", {"org": ("umbrella",)}, T0)
    assert len({await index.cluster_of(n) for n in ("a", "b", "c")}) == 1
    assert await index.cluster_of("x") == cluster_id("x")
    info = await index.explain(await index.cluster_of("a"))
    assert info is not None and info.members == ("a", "b", "c")


async def test_saturation_withdraws_evidence_not_yet_turned_into_a_link(harness: Harness) -> None:
    index = await harness.make(
        threshold=1.0,
        signals={
            "x": {"header": "x", "weight": 0.5, "max_fanout": 3},
            "y": {"header": "y", "weight": 0.5},
        },
    )
    await index.observe("a", {"x": ("common",)}, T0)
    await index.observe("b", {"x": ("common",)}, T0)
    for name in ("c", "d"):  # the 4th holder saturates "common"
        await index.observe(name, {"x": ("common",)}, T0)
    await index.observe("a", {"y": ("v",)}, T0)
    b = await index.observe("b", {"y": ("v",)}, T0)
    assert b == cluster_id("b")  # 0.5 from "common" no longer counts


async def test_saturation_does_not_undo_links_already_made(harness: Harness) -> None:
    index = await harness.make(
        threshold=1.0,
        signals={
            "x": {"header": "x", "weight": 0.5, "max_fanout": 3},
            "y": {"header": "y", "weight": 0.5},
        },
    )
    await index.observe("a", {"x": ("common",), "y": ("v",)}, T0)
    linked = await index.observe("b", {"x": ("common",), "y": ("v",)}, T0)
    for name in ("c", "d", "e"):
        await index.observe(name, {"x": ("common",)}, T0)
    assert await index.cluster_of("b") == await index.cluster_of("a") == linked
    info = await index.explain(linked)
    assert info is not None
    assert {(e.signal, e.saturated) for e in info.links[0].evidence} == {("x", True), ("y", False)}


async def test_an_unlink_holds_against_later_evidence(harness: Harness) -> None:
    index = await harness.make()
    await index.observe("a", {PAY: ("card",)}, T0)
    await index.observe("b", {PAY: ("card",)}, T0)
    ca, cb = await index.unlink("a", "b")
    assert ca != cb
    more = {"device": ("dev",), "ja4": ("rare",), "subnet": ("198.51.100.0/24",)}
    await index.observe("a", more, T0 + 5)
    assert await index.observe("b", more, T0 + 5) == cb  # 1.1 of fresh evidence, still apart
    c = await index.observe("c", {PAY: ("card",)}, T0 + 6)  # a newcomer joins one side only
    assert c in (await index.cluster_of("a"), await index.cluster_of("b"))
    assert await index.cluster_of("a") != await index.cluster_of("b")


async def test_unlink_keeps_the_rest_of_the_cluster_and_the_old_id(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b", "c", "d"):
        await index.observe(name, {PAY: ("card",)}, T0)
    old = await index.cluster_of("a")
    await index.unlink("a", "d")
    assert await index.cluster_of("a") == old == await index.cluster_of("b")
    assert await index.cluster_of("d") == cluster_id("d")
    assert harness.splits == [(old, [old, cluster_id("d")])]


async def test_detach_takes_an_account_out_for_good(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b", "c"):
        await index.observe(name, {PAY: ("card",)}, T0)
    assert await index.detach("b") == cluster_id("b")
    assert await index.cluster_of("a") == await index.cluster_of("c") != cluster_id("b")
    assert await index.observe("b", {"device": ("d",), PAY: ("card",)}, T0 + 1) == cluster_id("b")


async def test_a_manual_link_overrides_an_unlink(harness: Harness) -> None:
    index = await harness.make()
    await index.observe("a", {PAY: ("card",)}, T0)
    await index.observe("b", {PAY: ("card",)}, T0)
    await index.unlink("a", "b")
    cid = await index.link("a", "b", "ticket-42", T0 + 9)
    assert cid == await index.cluster_of("a") == await index.cluster_of("b")


async def test_explain_shows_the_evidence_of_every_link(harness: Harness) -> None:
    index = await harness.make()
    await index.observe("a", {PAY: ("card",), "device": ("dev",), "ja4": ("rare",)}, T0)
    await index.observe("b", {PAY: ("card",)}, T0 + 1)
    await index.observe("c", {"device": ("dev",), "ja4": ("rare",)}, T0 + 2)
    await index.observe("c", {"subnet": ("198.51.100.0/24",)}, T0 + 3)
    await index.observe("a", {"subnet": ("198.51.100.0/24",)}, T0 + 4)  # a-c reach 1.1
    await index.link("b", "z", "same support ticket", T0 + 5)
    info = await index.explain(await index.cluster_of("a"))
    assert info is not None
    assert info.members == ("a", "b", "c", "z") and info.size == 4
    found = {
        (link.a, link.b): {(e.signal, e.value, e.first_seen) for e in link.evidence}
        for link in info.links
    }
    assert found == {
        ("a", "b"): {(PAY, "card", T0 + 1)},
        ("a", "c"): {
            ("device", "dev", T0 + 2),
            ("ja4", "rare", T0 + 2),
            ("subnet", "198.51.100.0/24", T0 + 4),
        },
        ("b", "z"): {("manual", "same support ticket", T0 + 5)},
    }
    assert await index.explain(cluster_id("nobody")) is None


async def test_merges_report_the_absorbed_and_the_surviving_ids(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b", "c"):
        await index.observe(name, {PAY: ("big",)}, T0)
    for name in ("x", "y"):
        await index.observe(name, {PAY: ("small",)}, T0)
    big, small = await index.cluster_of("a"), await index.cluster_of("x")
    assert harness.merges[:1] == [([cluster_id("b")], cluster_id("a"))]  # tie: earlier stays
    harness.merges.clear()
    merged = await index.observe("y", {"org": ("acme",)}, T0 + 1)
    assert merged == small
    merged = await index.observe("c", {"org": ("acme",)}, T0 + 2)
    assert merged == big == await index.cluster_of("y")  # the larger cluster's id survives
    assert harness.merges == [([small], big)]


async def test_merging_two_clusters_keeps_every_member(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b"):
        await index.observe(name, {PAY: ("card-1",)}, T0)
    for name in ("c", "d", "e"):
        await index.observe(name, {PAY: ("card-2",)}, T0)
    await index.observe("b", {"org": ("acme",)}, T0 + 1)
    cid = await index.observe("d", {"org": ("acme",)}, T0 + 2)
    info = await index.explain(cid)
    assert info is not None and info.members == ("a", "b", "c", "d", "e")
    # A split replays the links among all of them: detaching e leaves the other four.
    await index.detach("e")
    info = await index.explain(await index.cluster_of("a"))
    assert info is not None and info.members == ("a", "b", "c", "d")


async def test_stats_count_clusters_sizes_and_links_without_ids(harness: Harness) -> None:
    index = await harness.make()
    for name in ("a", "b", "c"):
        await index.observe(name, {PAY: ("p1",)}, T0)
    for name in ("d", "e"):
        await index.observe(name, {"org": ("o1",)}, T0)
    await index.observe("f", {PAY: ("p2",)}, T0)
    stats = await index.stats()
    assert stats.clusters == 2 and stats.accounts == 6
    assert stats.sizes == {"3-5": 1, "2": 1}
    assert stats.links_by_signal == {PAY: 2, "org": 1}


async def test_a_disabled_index_links_nothing(harness: Harness) -> None:
    index = await harness.make(enabled=False)
    await index.observe("a", {PAY: ("card",)}, T0)
    assert await index.observe("b", {PAY: ("card",)}, T0) == cluster_id("b")
