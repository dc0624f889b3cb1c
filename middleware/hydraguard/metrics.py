"""Every Prometheus metric hydraguard exports, defined once. Labels come from bounded,
policy-defined sets (policy, route, decision, rule, ...) — never an account id."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .cluster.model import ClusterStats


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.decisions = Counter(
            "hydraguard_decisions",
            "Admission decisions.",
            ["policy", "route", "decision", "rule"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "hydraguard_decision_seconds",
            "Time to decide on a request (identify to admit), in seconds.",
            ["policy"],
            buckets=(
                0.00002,
                0.00005,
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.05,
                0.25,
            ),
            registry=registry,
        )
        self.tokens_reserved = Counter(
            "hydraguard_tokens_reserved",
            "Tokens reserved at admission (input estimate + output allowance).",
            ["policy", "route"],
            registry=registry,
        )
        self.tokens_settled = Counter(
            "hydraguard_tokens_settled",
            "Tokens charged after the response, by where the number came from.",
            ["policy", "route", "source"],  # source: usage | estimate
            registry=registry,
        )
        self.storage_errors = Counter(
            "hydraguard_storage_errors",
            "Storage calls that failed or timed out.",
            ["operation"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "hydraguard_storage_breaker_open",
            "1 while the storage circuit breaker is open (storage considered down).",
            multiprocess_mode="livemax",  # several workers: 1 while any live worker's is open
            registry=registry,
        )
        self.policy_loads = Counter(
            "hydraguard_policy_loads", "Policy loads.", ["result"], registry=registry
        )
        self.policy_reloads = Counter(
            "hydraguard_policy_reloads", "Policy reloads.", ["result"], registry=registry
        )
        self.in_flight = Gauge(
            "hydraguard_requests_in_flight",
            "Admitted requests whose response has not finished.",
            ["policy"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.anomaly_actions = Counter(
            "hydraguard_anomaly_actions",
            "Anomaly-rule actions applied (or, mode=shadow, that would have been).",
            ["policy", "rule", "action", "mode"],
            registry=registry,
        )
        self.anomaly_detectors = Counter(
            "hydraguard_anomaly_detector_contributions",
            "Detectors among the top contributors to the risk behind an applied action.",
            ["detector"],
            registry=registry,
        )
        self.audit_dropped = Counter(
            "hydraguard_audit_dropped",
            "Audit lines dropped: the writer fell behind.",
            registry=registry,
        )
        self.cluster_stats: Callable[[], ClusterStats | None] = lambda: None
        # Read at scrape time, so not in prometheus_client's multiprocess files: a multiprocess
        # scrape registers it too (the figures come from the shared index, any worker's will do).
        self.cluster_collector = _ClusterCollector(self)
        registry.register(self.cluster_collector)
        for result in ("ok", "error"):
            self.policy_loads.labels(result)
            self.policy_reloads.labels(result)
        self._decision_children: dict[tuple[str, str, str, str], Counter] = {}

    def decision(self, policy: str, route: str, decision: str, rule: str | None) -> None:
        key = (policy, route, decision, rule or "none")
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)  # type: ignore[assignment]
        child.inc()


_shared: dict[int, Metrics] = {}


def metrics_for(registry: CollectorRegistry | None) -> Metrics:
    """One Metrics per registry: several middlewares in one process share the collectors."""
    key = id(registry if registry is not None else REGISTRY)
    found = _shared.get(key)
    if found is None:
        found = _shared[key] = Metrics(registry)
    return found


class _ClusterCollector(Collector):
    """Cluster gauges read from the linking index at scrape time (memory index; a Redis
    index reports from the replica that answers the scrape)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        stats = self.metrics.cluster_stats()
        if stats is None:
            return
        clusters = GaugeMetricFamily(
            "hydraguard_clusters", "Clusters of two or more linked accounts."
        )
        clusters.add_metric([], stats.clusters)
        yield clusters
        accounts = GaugeMetricFamily(
            "hydraguard_cluster_accounts", "Accounts known to the linking index."
        )
        accounts.add_metric([], stats.accounts)
        yield accounts
        sizes = GaugeMetricFamily(
            "hydraguard_cluster_size_clusters",
            "Clusters by size bucket (members).",
            labels=["size"],
        )
        for bucket, count in sorted(stats.sizes.items()):
            sizes.add_metric([bucket], count)
        yield sizes
        links = CounterMetricFamily(
            "hydraguard_cluster_links", "Links made between accounts, by signal.", labels=["signal"]
        )
        for signal, count in sorted(stats.links_by_signal.items()):
            links.add_metric([signal], count)
        yield links
