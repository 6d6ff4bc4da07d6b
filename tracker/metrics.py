"""Prometheus metrics of the tracker.

The announce and scrape counters are plain integers, not prometheus_client
counters, because they sit on the hot path. A collector turns them into
metric families when `/metrics` is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.tasks import TaskState
from tracker.swarms import SwarmRegistry

# The fixed label values of `result`: errors.RejectCause plus ok and error.
RESULTS = ("ok", "invalid", "unregistered", "error")


class TrackerMetrics(Collector):
    """Counters of the tracker and the gauges read from its state."""

    def __init__(self, swarms: SwarmRegistry) -> None:
        self.swarms = swarms
        self.announces = dict.fromkeys(RESULTS, 0)
        self.scrapes = dict.fromkeys(RESULTS, 0)
        self.tasks_by_state: dict[str, int] = dict.fromkeys([state.value for state in TaskState], 0)
        self.live_seeders = 0
        self.ingest_dispatches = {"accepted": 0, "failed": 0}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self) -> bytes:
        """Return the metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        announces = CounterMetricFamily(
            "p2p_tracker_announces", "Announce requests by result", labels=["result"]
        )
        for result, count in self.announces.items():
            announces.add_metric([result], count)
        yield announces

        scrapes = CounterMetricFamily("p2p_tracker_scrapes", "Scrape requests by result", labels=["result"])
        for result, count in self.scrapes.items():
            scrapes.add_metric([result], count)
        yield scrapes

        yield GaugeMetricFamily(
            "p2p_tracker_swarms", "Registered torrents the tracker serves", value=len(self.swarms.swarms)
        )

        seeders, leechers = self.swarms.peer_counts()
        peers = GaugeMetricFamily("p2p_tracker_peers", "Peers in all swarms, by role", labels=["role"])
        peers.add_metric(["seeder"], seeders)
        peers.add_metric(["leecher"], leechers)
        yield peers

        tasks = GaugeMetricFamily("p2p_tracker_tasks", "Tasks by state", labels=["state"])
        for state, count in self.tasks_by_state.items():
            tasks.add_metric([state], count)
        yield tasks

        yield GaugeMetricFamily(
            "p2p_tracker_live_seeders", "Seeders whose heartbeat is current", value=self.live_seeders
        )

        dispatches = CounterMetricFamily(
            "p2p_tracker_ingest_requests", "Ingest requests sent to seeders, by result", labels=["result"]
        )
        for result, count in self.ingest_dispatches.items():
            dispatches.add_metric([result], count)
        yield dispatches
