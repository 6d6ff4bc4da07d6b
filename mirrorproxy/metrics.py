"""The mirror's Prometheus metrics, with fixed label values."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge


class Source(StrEnum):
    """The origin of a served blob's bytes."""

    CACHE = "cache"
    SWARM = "swarm"
    UPSTREAM = "upstream"


class BackToSourceReason(StrEnum):
    """The cause of a blob fetched from its upstream instead of the swarm."""

    NO_TRACKER = "no_tracker"  # the mirror runs without a tracker setting
    TRACKER_UNREACHABLE = "tracker_unreachable"
    TRACKER_ERROR = "tracker_error"  # the tracker responded with an error status
    TASK_FAILED = "task_failed"  # the seeder could not ingest the blob
    TASK_TIMEOUT = "task_timeout"  # the metainfo was not ready within task_timeout
    SWARM_STALL = "swarm_stall"  # no piece within swarm_stall_timeout
    SWARM_ERROR = "swarm_error"  # libtorrent failed the task, or its metainfo was invalid
    SIZE_MISMATCH = "size_mismatch"  # the torrent's size differs from the upstream's Content-Length
    DIGEST_MISMATCH = "digest_mismatch"  # the swarm delivered this digest wrong before


class MirrorMetrics:
    """Counters and gauges of one mirror process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.blobs_served = Counter(
            "p2p_mirror_blobs_served",
            "Blob responses completed, by the source of their bytes",
            ["source"],
            registry=self.registry,
        )

        self.bytes_served = Counter(
            "p2p_mirror_blob_bytes_served",
            "Blob bytes sent to clients, by source",
            ["source"],
            registry=self.registry,
        )

        self.back_to_source = Counter(
            "p2p_mirror_back_to_source",
            "Blob downloads that went to the upstream instead of the swarm, by reason",
            ["reason"],
            registry=self.registry,
        )

        self.digest_mismatches = Counter(
            "p2p_mirror_digest_mismatches",
            "Downloads whose bytes did not match their digest; their responses were aborted",
            ["source"],
            registry=self.registry,
        )

        self.downloads_started = Counter(
            "p2p_mirror_downloads_started",
            "Blob downloads started; clients that join a running download start none",
            registry=self.registry,
        )

        self.cache_bytes = Gauge(
            "p2p_mirror_cache_bytes", "Bytes of the blobs in the cache", registry=self.registry
        )
        self.cache_blobs = Gauge(
            "p2p_mirror_cache_blobs", "Blobs in the cache", registry=self.registry
        )
        self.cache_evictions = Counter(
            "p2p_mirror_cache_evictions", "Blobs evicted from the cache to stay under the quota",
            registry=self.registry,
        )

        self.rate_limit = Gauge(
            "p2p_mirror_rate_limit_bytes_per_second",
            "Configured rate limits of the host configuration by direction and scope (host, task); 0 means none",
            ["direction", "scope"],
            registry=self.registry,
        )
        self.connections_limit = Gauge(
            "p2p_mirror_connections_limit",
            "Configured peer connection limits by scope (host, task)",
            ["scope"],
            registry=self.registry,
        )
        self.transfer_rate = Gauge(
            "p2p_mirror_transfer_rate_bytes_per_second",
            "Payload rate of every task of the session together, by direction, as libtorrent measures it",
            ["direction"],
            registry=self.registry,
        )

        # Every label value exists from the start, so a scrape shows zeros
        # instead of missing series.
        for source in Source:
            self.blobs_served.labels(source)
            self.bytes_served.labels(source)
        for reason in BackToSourceReason:
            self.back_to_source.labels(reason)
        for source in (Source.SWARM, Source.UPSTREAM):
            self.digest_mismatches.labels(source)
        for direction in ("upload", "download"):
            self.transfer_rate.labels(direction)
