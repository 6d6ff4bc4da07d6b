"""The parts of one running mirror, built from its settings, and their start and stop."""

from __future__ import annotations

import logging

import anyio
import httpx

from core.host_config import HostConfig, host_config_path, load_host_config
from mirrorproxy.cache import BlobCache, CacheEntry
from mirrorproxy.downloads import Downloader, seed_cached
from mirrorproxy.limits import HostLimits
from mirrorproxy.metrics import MirrorMetrics
from mirrorproxy.settings import MirrorSettings
from mirrorproxy.tracker_client import TrackerClient
from mirrorproxy.upstreams import Upstreams
from swarm import Session, SwarmSettings

log = logging.getLogger(__name__)

# Blob responses that may wait on a download at the same time; each occupies
# a worker thread while it waits for bytes.
MAX_BLOB_RESPONSES = 256


# Extra attempts to connect to an upstream, with httpx's short backoff between them.
UPSTREAM_CONNECT_RETRIES = 2


class Mirror:
    """The host's libtorrent session, blob cache, downloads and upstream client."""

    def __init__(self, settings: MirrorSettings, host_config: HostConfig | None = None):
        """Build the mirror; without `host_config`, read it from settings.host_config.

        Raises HostConfigError when the host configuration is invalid.
        """
        self.settings = settings
        self.metrics = MirrorMetrics()
        if host_config is None:
            host_config, path = load_host_config(settings.host_config)
        else:
            path = host_config_path(settings.host_config)
        self.limits = HostLimits(host_config, path, self.metrics)
        self.upstreams = Upstreams(settings.upstreams, settings.default_registry)
        self.session: Session | None = None
        self.tracker: TrackerClient | None = None
        self.cache = BlobCache(settings.data_dir / "blobs", settings.cache_quota, on_evict=self._stop_seeding)
        self.downloader: Downloader | None = None
        self.client: httpx.AsyncClient | None = None
        self.limiter: anyio.CapacityLimiter | None = None

    @property
    def size_wait_timeout(self) -> float:
        """Seconds a response may wait for its download to learn the blob's size: every step's timeout."""
        settings = self.settings
        return (
            settings.task_timeout
            + 2 * settings.tracker_timeout
            + settings.upstream_connect_timeout
            + settings.upstream_read_timeout
        )

    def start(self) -> None:
        """Start the session, seed what the cache has, and open the upstream client."""
        settings = self.settings
        if settings.tracker:
            self.session = Session(
                SwarmSettings(
                    listen_interfaces=settings.bittorrent_listen,
                    announce_params=settings.announce_params,
                    **self.limits.config.session_limits(),
                )
            )
            self.limits.attach(self.session)
            self.tracker = TrackerClient(settings.tracker, settings.tracker_token, settings.tracker_timeout)
        else:
            log.warning("no tracker set: every blob comes from its upstream directly")

        entries = self.cache.load()
        if self.session is not None:
            seeded = seed_cached(self.limits, entries)
            log.info("cache loaded", extra={"blobs": len(entries), "seeding": len(seeded)})

        self.downloader = Downloader(
            settings, self.cache, self.metrics, self.session, self.tracker, self.limits
        )
        self.metrics.cache_bytes.set(self.cache.total_bytes())
        self.metrics.cache_blobs.set(len(self.cache))
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_read_timeout, connect=settings.upstream_connect_timeout),
            # Retry only failed connection attempts, which never reached the
            # upstream and so are safe for any request: a busy registry host
            # refused a connection in a 32-host benchmark, and skopeo does not
            # retry the 502 it then got.
            transport=httpx.AsyncHTTPTransport(retries=UPSTREAM_CONNECT_RETRIES),
        )
        self.limiter = anyio.CapacityLimiter(MAX_BLOB_RESPONSES)

    async def stop(self) -> None:
        """Close the upstream client, the tracker client and the session; stopping twice is safe."""
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.downloader is not None:
            self.downloader.close()
        if self.tracker is not None:
            self.tracker.close()
        if self.session is not None:
            self.session.close()

    def _stop_seeding(self, entry: CacheEntry) -> None:
        if self.session is not None and entry.info_hash:
            self.session.remove_task(entry.info_hash, delete_files=True)
        self.metrics.cache_evictions.inc()
