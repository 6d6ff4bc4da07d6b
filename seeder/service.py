"""The seeder's machinery behind its HTTP API: ingest queue, cache, seeding session, heartbeat."""

from __future__ import annotations

import logging
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from core.host_config import HostConfig, load_host_config
from core.ids import InvalidValue
from core.tasks import IngestRequest, SeederHeartbeat
from seeder.cache import Cache, CachedFile
from seeder.errors import FailureCause, IngestError
from seeder.ingest import Ingest
from seeder.metainfo import announce_url_of
from seeder.metrics import SeederMetrics
from seeder.origin import FetchOptions
from seeder.settings import SeederSettings, join_host_port, split_host_port
from seeder.tracker_client import TrackerClient, TrackerError
from swarm import SEEDER_PEER_ID_PREFIX, Session, SwarmError, SwarmSettings

log = logging.getLogger(__name__)

SEEDER_ID_FILE = "seeder_id"
_SEEDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Threads that re-register cached tasks, apart from the ingests so that a
# queue of long downloads does not delay them.
REGISTRATION_THREADS = 2


class ServiceStopped(Exception):
    """The seeder is not running (not started yet, or stopping) and takes no ingest."""


class Submitted(StrEnum):
    """The outcome of `submit` for one ingest request."""

    ACCEPTED = "accepted"  # queued for a download
    INGESTING = "ingesting"  # the task is being ingested already; nothing new started
    CACHED = "cached"  # the content is cached; its metainfo is being registered again


class SeederService:
    """Everything the seeder runs besides its HTTP server; `start` and `close` bracket its life."""

    def __init__(self, settings: SeederSettings, host_config: HostConfig | None = None) -> None:
        """Build the service; without `host_config`, read it from settings.host_config.

        Raises HostConfigError when the host configuration is invalid.
        """
        self.settings = settings
        self.metrics = SeederMetrics()
        self.limits = host_config if host_config is not None else load_host_config(settings.host_config)[0]
        self.seeder_id = ""
        self.session: Session | None = None
        self.cache: Cache | None = None
        self.tracker: TrackerClient | None = None
        self._fetch_options = FetchOptions(
            connect_timeout=settings.origin_connect_timeout,
            read_timeout=settings.origin_read_timeout,
            attempts=settings.origin_attempts,
            retry_max_delay=settings.retry_max_delay,
            parallel_ranges=settings.parallel_ranges,
            segment_size=settings.segment_size,
            hash_buffer=settings.hash_buffer,
        )
        self._lock = threading.Lock()
        self._running: dict[str, Ingest | None] = {}
        self._announce_urls: dict[str, str] = {}  # info hash -> announce URL of the seeded torrent
        self._stopping = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._ingests: ThreadPoolExecutor | None = None
        self._registrations: ThreadPoolExecutor | None = None
        self._started = False
        self._closed = False

    # Life cycle.

    def start(self) -> None:
        """Open the cache, seed what it holds, and start heartbeating; raise InvalidValue on bad settings."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.seeder_id = load_seeder_id(settings.data_dir)
        api_url = settings.api_url

        self.session = Session(
            SwarmSettings(
                listen_interfaces=settings.session_listen,
                peer_id_prefix=SEEDER_PEER_ID_PREFIX,
                **self.limits.session_limits(),
            )
        )
        self.cache = Cache(settings.data_dir, settings.cache_quota, in_use=self._in_use, on_evict=self._on_evict)
        for cached in self.cache.files():
            self._seed(cached)
        log.info(
            "seeder started",
            extra={
                "seeder_id": self.seeder_id,
                "api_url": api_url,
                "peer": self.peer_address,
                "cached_files": len(self.cache.files()),
                "cached_bytes": self.cache.used_bytes(),
            },
        )

        self.metrics.cache_bytes.set_function(self.cache.used_bytes)
        self.metrics.cache_quota.set(settings.cache_quota)
        self.metrics.tasks_seeded.set_function(lambda: len(self.session.tasks()) if self.session else 0)
        self._export_limits()
        # NOTE: the seeder fetches from origins over HTTP, outside libtorrent,
        # so download_limit and task_download_limit bound nothing here.
        log.info("host limits applied", extra=self.limits.model_dump())

        self.tracker = TrackerClient(settings.tracker, settings.tracker_token)
        self._ingests = ThreadPoolExecutor(settings.max_ingests, thread_name_prefix="ingest")
        self._registrations = ThreadPoolExecutor(REGISTRATION_THREADS, thread_name_prefix="register")
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, args=(api_url,), name="heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        self._started = True

    def close(self) -> None:
        """Stop heartbeating, cancel the ingests and stop seeding; closing twice is safe."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()

        # Heartbeats first, so the tracker hands this seeder's tasks to another.
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=15)

        # Running downloads stop at their next chunk; queued ones never start.
        # Neither is reported as failed: the tracker dispatches them again.
        with self._lock:
            running = [ingest for ingest in self._running.values() if ingest is not None]
        for ingest in running:
            ingest.cancel()
        for pool in (self._ingests, self._registrations):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

        if self.session is not None:
            self.session.close()
        if self.tracker is not None:
            self.tracker.close()
        log.info("seeder stopped", extra={"seeder_id": self.seeder_id})

    @property
    def peer_address(self) -> str:
        """HOST:PORT of the BitTorrent session, as peers reach it."""
        host, _ = split_host_port(self.settings.session_listen, "bittorrent_listen")
        if host in ("0.0.0.0", "::"):
            host = urlsplit(self.settings.api_url).hostname or host
        return join_host_port(host, self.session.listen_port if self.session else 0)

    # Ingests.

    def submit(self, request: IngestRequest) -> Submitted:
        """Start the ingest of a task unless it runs already; a cached task is registered again."""
        if not self._started or self._stopping.is_set():
            raise ServiceStopped("the seeder is not running; retry with another seeder or later")
        with self._lock:
            if request.task_id in self._running:
                return Submitted.INGESTING
            self._running[request.task_id] = None

        sha256 = self._cached_content(request)
        if sha256 is not None:
            self._registrations.submit(self._run_guarded, request, cached=True)
            return Submitted.CACHED
        self._ingests.submit(self._run_guarded, request, cached=False)
        return Submitted.ACCEPTED

    def running(self) -> list[str]:
        """Ids of the tasks being ingested or registered now."""
        with self._lock:
            return list(self._running)

    def _cached_content(self, request: IngestRequest) -> str | None:
        digest = (request.digest or "").removeprefix("sha256:")
        if digest and self.cache.get(digest):
            return digest
        return self.cache.task_content(request.task_id)

    def _run_guarded(self, request: IngestRequest, cached: bool) -> None:
        try:
            self._run(request, cached)
        except Exception:
            # NOTE: a bug lands here; the task is failed so that no one waits
            # for it forever, and the traceback goes to the log only.
            log.exception("ingest crashed", extra={"task_id": request.task_id})
            self._report_failure(
                request, IngestError("internal error in the seeder; see its log", FailureCause.INTERNAL)
            )
        finally:
            with self._lock:
                self._running.pop(request.task_id, None)

    def _run(self, request: IngestRequest, cached: bool) -> None:
        ingest = Ingest(request, self.cache, self._fetch_options, on_bytes=self.metrics.origin_bytes.inc)
        with self._lock:
            self._running[request.task_id] = ingest
        log.info(
            "ingest started",
            extra={"task_id": request.task_id, "cached": cached, "digest": request.digest or "unknown"},
        )

        if not cached:
            self.metrics.ingests_running.inc()
        try:
            result = ingest.run()
        except IngestError as error:
            self.metrics.ingests.labels(f"failed_{error.cause}").inc()
            if error.cause == FailureCause.CANCELLED:
                log.info("ingest cancelled", extra={"task_id": request.task_id})
                return
            log.warning("ingest failed", extra={"task_id": request.task_id, "error": str(error), "cause": str(error.cause)})
            self._report_failure(request, error)
            return
        finally:
            if not cached:
                self.metrics.ingests_running.dec()

        # Register first and seed second: the tracker rejects announces of an
        # info hash it has not registered, and libtorrent would then wait
        # before announcing again. Announcing right after registration hands
        # the seeder every downloader that got the metainfo in between.
        try:
            self.tracker.put_metainfo(request.task_id, result.metainfo.data)
        except TrackerError as error:
            log.error(
                "registering the metainfo with the tracker failed",
                extra={"task_id": request.task_id, "error": str(error)},
            )
            # The task would stay `ingesting` forever; tell the tracker why it
            # failed, so every waiting client gets the reason at once.
            self.metrics.ingests.labels(f"failed_{FailureCause.INTERNAL}").inc()
            verb = "rejected" if not error.retryable else "did not accept"
            self._report_failure(
                request, IngestError(f"the tracker {verb} the seeder's metainfo: {error}", FailureCause.INTERNAL)
            )
            self._seed(result)
            return
        self._seed(result, announce_now=cached)
        self.metrics.ingests.labels("cached" if cached else "ready").inc()
        log.info(
            "task ready",
            extra={"task_id": request.task_id, "info_hash": result.metainfo.info_hash, "bytes": result.size},
        )

    def _report_failure(self, request: IngestRequest, error: IngestError) -> None:
        try:
            self.tracker.put_failure(request.task_id, str(error))
        except TrackerError as report_error:
            log.error(
                "reporting a failed ingest to the tracker failed",
                extra={"task_id": request.task_id, "error": str(report_error)},
            )

    # Seeding.

    def _seed(self, cached: CachedFile, announce_now: bool = False) -> None:
        """Add a cached file to the session in seed mode (its pieces were hashed as it arrived).

        With `announce_now`, a task already seeded but without peers is added
        again, so that it announces at once instead of at its next interval.

        NOTE: libtorrent 2.1.1 in seed mode still hashes each piece again the
        first time a peer requests it (a corrupted piece makes it leave seed
        mode and recheck the file). Only `add_torrent_params.verified_pieces`
        skips that, and `swarm.Session.add_task` does not set it.
        """
        if cached.size == 0:
            # libtorrent rejects a torrent of 0 bytes ("invalid length of
            # torrent"); there is nothing to seed, and the metainfo records the size 0.
            return
        info_hash = cached.metainfo.info_hash
        announce_url = announce_url_of(cached.metainfo)
        with self._lock:
            seeded_with = self._announce_urls.get(info_hash)
            self._announce_urls[info_hash] = announce_url
        handle = self.session.get(info_hash)
        if handle is not None:
            # A task keeps the trackers it was added with, so a new announce URL needs a new task.
            if seeded_with == announce_url and not announce_now:
                return
            # A tracker that registers the task again may have lost it, and
            # rejected this task's announces until now; libtorrent would retry
            # only after its backoff. NOTE: re-adding is the only way to force
            # an announce through the swarm API, and it drops connected peers,
            # so a task that has peers is left alone.
            if seeded_with == announce_url and handle.progress().peers > 0:
                return
            self.session.remove_task(info_hash)
        upload_limit, download_limit = self.limits.task_limits()
        try:
            self.session.add_task(
                cached.metainfo.data,
                self.cache.blobs,
                seed_mode=True,
                upload_limit=upload_limit,
                download_limit=download_limit,
            )
        except SwarmError as error:
            log.error("cannot seed a cached file", extra={"digest": f"sha256:{cached.sha256}", "error": str(error)})

    def _export_limits(self) -> None:
        limits = self.limits
        self.metrics.rate_limit.labels("upload", "host").set(limits.upload_limit)
        self.metrics.rate_limit.labels("download", "host").set(limits.download_limit)
        self.metrics.rate_limit.labels("upload", "task").set(limits.task_upload_limit)
        self.metrics.rate_limit.labels("download", "task").set(limits.task_download_limit)
        self.metrics.connections_limit.labels("host").set(limits.connections_limit)
        self.metrics.connections_limit.labels("task").set(limits.task_connections_limit)
        self.metrics.transfer_rate.labels("upload").set_function(lambda: self._current_rate("upload"))
        self.metrics.transfer_rate.labels("download").set_function(lambda: self._current_rate("download"))

    def _current_rate(self, direction: str) -> float:
        if self.session is None:
            return 0.0
        total = 0
        for task in self.session.tasks():
            try:
                progress = task.progress()
            except RuntimeError:
                # The task was removed between the listing and the status call.
                continue
            total += progress.upload_rate if direction == "upload" else progress.download_rate
        return float(total)

    def _in_use(self, cached: CachedFile) -> bool:
        """Return whether a swarm still needs the file, that is, peers are connected to its task."""
        handle = self.session.get(cached.metainfo.info_hash) if self.session else None
        return handle is not None and handle.progress().peers > 0

    def _on_evict(self, cached: CachedFile) -> None:
        # NOTE: the tracker is not notified; its task stays ready, and a later
        # ingest request for it downloads the content again.
        if self.session is not None:
            self.session.remove_task(cached.metainfo.info_hash)
        with self._lock:
            self._announce_urls.pop(cached.metainfo.info_hash, None)

    # Heartbeat.

    def _heartbeat_loop(self, api_url: str) -> None:
        failing = False
        while not self._stopping.is_set():
            heartbeat = SeederHeartbeat(api_url=api_url, peer_address=self.peer_address)
            try:
                self.tracker.heartbeat(self.seeder_id, heartbeat)
            except TrackerError as error:
                # One warning when heartbeats start failing, not one per interval.
                if not failing:
                    log.warning("heartbeat to the tracker failed", extra={"error": str(error)})
                failing = True
            else:
                if failing:
                    log.info("heartbeat to the tracker works again", extra={"seeder_id": self.seeder_id})
                failing = False
            self._stopping.wait(self.settings.heartbeat_interval)


def load_seeder_id(data_dir: Path) -> str:
    """Return the seeder id stored in the data directory, creating it on first start."""
    path = data_dir / SEEDER_ID_FILE
    try:
        seeder_id = path.read_text().strip()
    except FileNotFoundError:
        seeder_id = f"seeder-{secrets.token_hex(8)}"
        path.write_text(seeder_id + "\n")
        return seeder_id
    if not _SEEDER_ID.match(seeder_id):
        raise InvalidValue(
            f"invalid seeder id {seeder_id!r} in {path}: expected 1 to 64 letters, digits, '.', '_' or '-'; "
            "delete the file to get a new id"
        )
    return seeder_id
