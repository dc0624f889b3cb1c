"""The safety requirement: a benign crowd sharing weak signals never forms a giant
cluster, while accounts sharing a card or a set of templates do link."""

from __future__ import annotations

import random
from collections import Counter

from hydraguard.cluster.config import (
    ClusteringConfig,
    SignalSpec,
    TemplateSource,
    default_signals,
)
from hydraguard.cluster.index import ClusterIndex
from hydraguard.cluster.signals import SignalExtractor

T0 = 1_764_230_400.0


def test_a_benign_crowd_stays_apart_while_rings_link() -> None:
    rng = random.Random(11)
    # Four LSH bands at 0.3 (the shipped policy uses one band at 0.15): the harder case,
    # where stock prompts could chain strangers together by their bands.
    template = SignalSpec(template=TemplateSource(bands=4), weight=0.3, max_fanout=200)
    config = ClusteringConfig(signals={**default_signals(), "template": template})
    extractor = SignalExtractor(config)
    index = ClusterIndex(config)
    popular = [f"popular-{i}" for i in range(300)]  # stock prompts, Zipf-distributed
    browsers = [f"t13d1516h2_{i:02d}" for i in range(8)]
    benign = [f"user-{i}" for i in range(10_000)]
    card_ring = [f"ring-card-{i}" for i in range(60)]
    template_ring = [f"ring-tpl-{i}" for i in range(40)]
    attack_templates = [f"attack-{i}" for i in range(4)]

    def bands(name: str) -> list[str]:
        return [f"{name}:b{band}" for band in range(4)]

    traffic = []
    for n, account in enumerate(benign):
        ip = "198.51.100.7" if n % 20 == 0 else f"{rng.randrange(1, 224)}.{n % 251}.{n // 251}.1"
        headers = {
            "x-ja4": browsers[0] if rng.random() < 0.85 else rng.choice(browsers),
            "x-device-fingerprint": f"dev-{n}",
            "x-payment-fingerprint": f"card-{n}",
        }
        for _ in range(3):
            name = popular[min(int(rng.paretovariate(1.0)) - 1, len(popular) - 1)]
            traffic.append((account, headers, ip, bands(name)))
        traffic.append((account, headers, ip, bands(f"own-{n}")))
    for n, account in enumerate(card_ring):
        headers = {"x-payment-fingerprint": "stolen-card", "x-ja4": browsers[0]}
        traffic.append((account, headers, f"203.0.{n}.9", bands(f"own-{account}")))
    for n, account in enumerate(template_ring):
        for name in attack_templates:
            headers = {"x-ja4": browsers[0], "x-payment-fingerprint": account}
            traffic.append((account, headers, f"192.0.{n}.9", bands(name)))
    rng.shuffle(traffic)
    for i, (account, headers, ip, template) in enumerate(traffic):
        index.observe(account, extractor.extract(headers, {}, ip, template), T0 + i)

    benign_clusters = Counter(index.cluster_of(a) for a in benign)
    assert max(benign_clusters.values()) <= 5  # no giant component; the NAT alone holds 500
    assert sum(1 for size in benign_clusters.values() if size > 1) < 50
    assert len({index.cluster_of(a) for a in card_ring}) == 1
    assert len({index.cluster_of(a) for a in template_ring}) == 1
    assert index.cluster_of(card_ring[0]) != index.cluster_of(template_ring[0])
    assert not set(benign_clusters) & {
        index.cluster_of(card_ring[0]),
        index.cluster_of(template_ring[0]),
    }
