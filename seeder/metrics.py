"""The seeder's Prometheus metrics, in a registry of its own so two seeders can share a process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from seeder.errors import FailureCause

# Fixed values of the `result` label of ingests_total.
INGEST_RESULTS = ("ready", "cached") + tuple(f"failed_{cause}" for cause in FailureCause)


class SeederMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.origin_bytes = Counter(
            "p2p_seeder_origin_bytes", "Body bytes received from origins", registry=self.registry
        )
        self.ingests = Counter(
            "p2p_seeder_ingests",
            "Ingests by result: ready, cached (served from the cache), or failed_<cause>",
            ["result"],
            registry=self.registry,
        )
        self.ingests_running = Gauge(
            "p2p_seeder_ingests_running", "Ingests downloading now", registry=self.registry
        )
        self.cache_bytes = Gauge("p2p_seeder_cache_bytes", "Bytes of the cached files", registry=self.registry)
        self.cache_quota = Gauge(
            "p2p_seeder_cache_quota_bytes", "The cache quota in bytes, 0 for none", registry=self.registry
        )
        self.tasks_seeded = Gauge(
            "p2p_seeder_tasks_seeded", "Tasks in the seeding session", registry=self.registry
        )
        self.rate_limit = Gauge(
            "p2p_seeder_rate_limit_bytes_per_second",
            "Configured rate limits of the host configuration by direction and scope (host, task); 0 means none",
            ["direction", "scope"],
            registry=self.registry,
        )
        self.connections_limit = Gauge(
            "p2p_seeder_connections_limit",
            "Configured peer connection limits by scope (host, task)",
            ["scope"],
            registry=self.registry,
        )
        self.transfer_rate = Gauge(
            "p2p_seeder_transfer_rate_bytes_per_second",
            "Payload rate of every seeded task together, by direction, as libtorrent measures it",
            ["direction"],
            registry=self.registry,
        )
        for result in INGEST_RESULTS:
            self.ingests.labels(result)
