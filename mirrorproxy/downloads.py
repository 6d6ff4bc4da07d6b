"""Blob downloads shared by every client of the host: through the swarm, else from the upstream.

One worker thread per blob fetches it into the cache and checks its sha256 in
order as the bytes arrive. Clients of a swarm download read its pieces through
the libtorrent task as they are verified. Clients of an upstream download read
the prefix of the file that the worker has written. Every response holds back
its last byte until the whole digest has matched, so a wrong blob never ends
in a clean response.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import httpx

from core.ids import Digest
from core.tasks import TaskRequest
from mirrorproxy.cache import BlobCache, CacheEntry
from mirrorproxy.limits import HostLimits
from mirrorproxy.metrics import BackToSourceReason, MirrorMetrics, Source
from mirrorproxy.settings import MirrorSettings
from mirrorproxy.tracker_client import NoSwarm, TrackerClient
from swarm import Session, SwarmError, TaskHandle

log = logging.getLogger(__name__)

# Largest chunk handed to a client at once; bounds memory per response.
CHUNK_BYTES = 1 << 20

# How often a waiting reader wakes to re-check, in seconds; a missed wake-up
# costs at most this much delay.
_READER_WAKE_SECONDS = 1.0

# Seconds a blob that failed its digest stays on disk, so that readers still
# reach its last byte but one before their responses are aborted.
_DISCARD_DELAY_SECONDS = 60.0


class DownloadFailed(Exception):
    """A blob download failed; every response reading it is aborted."""


class DigestMismatch(DownloadFailed):
    """The bytes of a blob did not hash to its digest."""


@dataclass(frozen=True)
class BlobRequest:
    """The inputs of one download: its cache key, the upstream URL and the credentials for it."""

    key: str  # "sha256:<hex>", or "url:<sha256 of the URL>" when no digest is known
    url: str
    digest: Digest | None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # never logged
    size: int | None = None  # the upstream's Content-Length, when a HEAD returned it
    # Limits of this download in bytes/s, 0 for none; they only lower the host's per-task limits.
    upload_limit: int = 0
    download_limit: int = 0


class _State(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Download:
    """One blob being fetched into the cache, and the clients reading it meanwhile."""

    def __init__(self, request: BlobRequest, stall_timeout: float):
        self.request = request
        self._stall_timeout = stall_timeout
        self.size: int | None = request.size
        self.error: str | None = None
        self.sha256: str | None = None  # hex digest of the bytes, once done
        self._state = _State.RUNNING
        self._changed = threading.Condition()
        self._size_known = request.size is not None

        # The file the bytes go to now, and how many of its first bytes are
        # written and hashed. A switch from the swarm to the upstream starts
        # a new file (a new generation) from byte 0.
        self._path: Path | None = None
        self._task: TaskHandle | None = None  # the swarm task, while it is the source
        self._source = Source.SWARM
        self._generation = 0
        self._available = 0
        self._mismatch = False

    @property
    def key(self) -> str:
        return self.request.key

    # Called by the worker.

    def _start_file(self, path: Path, source: Source, size: int | None, task: TaskHandle | None = None) -> None:
        with self._changed:
            self._path = path
            self._task = task
            self._source = source
            self._generation += 1
            self._available = 0
            if size is not None:
                self.size = size
            self._size_known = True
            self._changed.notify_all()

    def _advance(self, count: int) -> None:
        with self._changed:
            self._available += count
            self._changed.notify_all()

    def _finish(self, sha256: str) -> None:
        with self._changed:
            self._task = None
            self.size = self._available
            self.sha256 = sha256
            self._state = _State.DONE
            self._changed.notify_all()

    def _fail(self, error: str, mismatch: bool = False, moved: tuple[Path, Path] | None = None) -> None:
        """Mark the download failed; `moved` is (old, new) when its directory was renamed."""
        with self._changed:
            self.error = error
            self._mismatch = mismatch
            if moved is not None and self._path is not None:
                old, new = moved
                self._path = new / self._path.relative_to(old)
            # Readers still streaming from the task finish from the file.
            self._task = None
            self._state = _State.FAILED
            self._size_known = True
            self._changed.notify_all()

    # Called by clients.

    @property
    def source(self) -> Source:
        return self._source

    def wait_done(self, timeout: float) -> None:
        """Block until the blob is complete and verified; raise DownloadFailed or TimeoutError if not."""
        with self._changed:
            finished = self._changed.wait_for(lambda: self._state != _State.RUNNING, timeout)
            if not finished:
                raise TimeoutError(f"{self.key} not downloaded after {timeout:.0f} s")
            if self._state == _State.FAILED:
                raise DownloadFailed(self.error)

    def wait_size(self, timeout: float) -> int | None:
        """Block until the blob's size is known; return it, or None if the source does not tell.

        Raises DownloadFailed when the download fails first, TimeoutError after `timeout` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._size_known, timeout):
                raise TimeoutError(f"size of {self.key} still unknown after {timeout:.0f} s")
            if self._state == _State.FAILED:
                raise DownloadFailed(self.error)
            return self.size

    def read(self, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, Source]]:
        """Yield the bytes [start, end) of the blob in order with their source, as they are verified.

        `end` None means to the end of the blob. Raises DownloadFailed when the
        download fails; the bytes already yielded were those of the current
        source, so the caller must abort its response.
        """
        position = start
        descriptor: int | None = None
        opened_generation = -1
        try:
            while True:
                with self._changed:
                    limit = self._wait_readable(position, end, opened_generation)
                    if limit is None:
                        return
                    path, generation, source = self._path, self._generation, self._source
                    task = self._task if self._state == _State.RUNNING else None

                if task is not None:
                    # A verified piece may still sit in libtorrent's store
                    # buffer rather than in the file, so it is read through
                    # the task until the download is done.
                    try:
                        for chunk in task.stream(position, limit, stall_timeout=self._stall_timeout):
                            position += len(chunk)
                            yield chunk, source
                    except (TimeoutError, SwarmError, RuntimeError):
                        # The worker meets the same stall or error and switches
                        # to the upstream; continue from there.
                        self._wait_for_change(generation)
                    continue

                if generation != opened_generation:
                    if descriptor is not None:
                        os.close(descriptor)
                        descriptor = None
                    try:
                        descriptor = os.open(path, os.O_RDONLY)
                    except FileNotFoundError:
                        if self._state == _State.FAILED:
                            raise DownloadFailed(self.error) from None
                        # The source changed since the snapshot; wait for the new file.
                        self._wait_for_change(generation)
                        continue
                    opened_generation = generation

                chunk = os.pread(descriptor, min(CHUNK_BYTES, limit - position), position)
                if not chunk:
                    raise DownloadFailed(f"{path} has no data at byte {position}, though it was written")
                position += len(chunk)
                yield chunk, source
        finally:
            if descriptor is not None:
                os.close(descriptor)

    def _wait_readable(self, position: int, end: int | None, opened_generation: int) -> int | None:
        """Wait (holding the lock) until bytes at `position` may be sent; return the limit, or None at the end."""
        while True:
            if self._state == _State.FAILED:
                # After a digest mismatch every reader still gets every byte
                # but the last, so a response cut one byte short means a wrong
                # digest; any other failure aborts the response at once.
                if self._mismatch:
                    stop = self._available if end is None else min(end, self._available)
                    if position < stop - 1:
                        return stop - 1
                raise DownloadFailed(self.error)
            if self._state == _State.DONE:
                stop = self.size if end is None else min(end, self.size)
                return stop if position < stop else None

            # Hold back the response's last byte until the digest has matched.
            # With an unknown end, any byte may be the last.
            if self._task is not None:
                # Readers stream from the task as its pieces arrive.
                limit = (self.size if end is None else min(end, self.size)) - 1
            else:
                limit = self._available if end is None else min(end, self._available)
                last = (end if end is not None else self._available) - 1
                limit = min(limit, last)
            if position < limit:
                return limit
            self._changed.wait(_READER_WAKE_SECONDS)

    def _wait_for_change(self, generation: int) -> None:
        """Wait until the download switches source or ends; the worker's own timeouts bound the wait."""
        with self._changed:
            while self._generation == generation and self._state == _State.RUNNING:
                self._changed.wait(_READER_WAKE_SECONDS)


class Downloader:
    """Starts one download per blob, shared by every client until it is in the cache."""

    def __init__(
        self,
        settings: MirrorSettings,
        cache: BlobCache,
        metrics: MirrorMetrics,
        session: Session | None,
        tracker: TrackerClient | None,
        limits: HostLimits,
    ):
        self._settings = settings
        self._limits = limits
        self._cache = cache
        self._metrics = metrics
        self._session = session
        self._tracker = tracker
        self._upstream = httpx.Client(
            timeout=httpx.Timeout(settings.upstream_read_timeout, connect=settings.upstream_connect_timeout),
            follow_redirects=True,
        )
        self._running: dict[str, Download] = {}
        self._lock = threading.Lock()
        # Keys whose swarm bytes failed their digest: the tracker would hand out
        # the same bad torrent again, so they come from the upstream from now on.
        self._untrusted_in_swarm: set[str] = set()

    def close(self) -> None:
        self._upstream.close()

    def open(self, request: BlobRequest) -> CacheEntry | Download:
        """Return the cached blob, the running download to join, or a new download.

        Content known only by its URL may have changed since it was cached,
        so it is always asked of the tracker again.

        NOTE: a request that joins a running download gets that download's
        rate limits, not its own.
        """
        with self._lock:
            entry = self._cache.get(request.key) if request.digest is not None else None
            if entry is not None:
                return entry
            download = self._running.get(request.key)
            if download is not None:
                return download

            download = Download(request, self._settings.swarm_stall_timeout)
            self._running[request.key] = download
        self._metrics.downloads_started.inc()
        worker = threading.Thread(target=self._run, args=(download,), name=f"download {request.key}", daemon=True)
        worker.start()
        return download

    def _run(self, download: Download) -> None:
        key = download.key
        directory: Path | None = None
        try:
            if download.request.digest is None:
                self._cache.remove(key)
            directory = self._cache.directory_for(key)
            try:
                self._from_swarm(download, directory)
                return
            except NoSwarm as reason:
                log.warning(
                    "fetching blob from the upstream instead of the swarm",
                    extra={"digest": key, "reason": reason.reason.value, "error": reason.detail},
                )
                self._metrics.back_to_source.labels(reason.reason).inc()
            self._from_upstream(download, directory)
        except DigestMismatch as error:
            log.error("blob download failed", extra={"digest": key, "error": str(error)})
            download._fail(str(error), mismatch=True, moved=_discard_later(directory))
        except DownloadFailed as error:
            log.error("blob download failed", extra={"digest": key, "error": str(error)})
            download._fail(str(error))
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        except Exception as error:
            log.exception("blob download failed", extra={"digest": key})
            download._fail(f"internal error: {error!r}")
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        finally:
            with self._lock:
                self._running.pop(key, None)

    # The swarm.

    def _from_swarm(self, download: Download, directory: Path) -> None:
        """Download through the swarm; raise NoSwarm before any byte is lost if it cannot deliver."""
        request = download.request
        if self._tracker is None or self._session is None:
            raise NoSwarm(BackToSourceReason.NO_TRACKER, "the mirror runs without a tracker")
        if request.key in self._untrusted_in_swarm:
            raise NoSwarm(BackToSourceReason.DIGEST_MISMATCH, "the swarm delivered a wrong blob for this digest before")

        task_request = TaskRequest(
            url=request.url,
            digest=str(request.digest) if request.digest else None,
            headers=request.headers,
        )
        task = self._tracker.ready_task(task_request, self._settings.task_timeout)
        metainfo = self._tracker.metainfo(task)
        try:
            handle = self._limits.add_task(
                metainfo, directory / "swarm", upload=request.upload_limit, download=request.download_limit
            )
        except SwarmError as error:
            raise NoSwarm(BackToSourceReason.SWARM_ERROR, str(error)) from None
        if download.size is not None and handle.size != download.size:
            self._session.remove_task(handle.info_hash, delete_files=True)
            raise NoSwarm(
                BackToSourceReason.SIZE_MISMATCH,
                f"torrent {handle.info_hash} has {handle.size} bytes, the upstream {download.size}",
            )

        log.info("downloading blob through the swarm", extra={"digest": request.key, "info_hash": handle.info_hash})
        download._start_file(handle.path, Source.SWARM, handle.size, task=handle)
        hasher = hashlib.sha256()
        stall_timeout = self._settings.swarm_stall_timeout
        try:
            for chunk in handle.stream(0, handle.size, stall_timeout=stall_timeout):
                hasher.update(chunk)
                download._advance(len(chunk))
            # The cache serves from the file, so wait until libtorrent has
            # flushed every piece to it.
            handle.wait_complete(stall_timeout)
        except TimeoutError as error:
            self._session.remove_task(handle.info_hash, delete_files=True)
            raise NoSwarm(BackToSourceReason.SWARM_STALL, str(error)) from None
        except SwarmError as error:
            self._session.remove_task(handle.info_hash, delete_files=True)
            raise NoSwarm(BackToSourceReason.SWARM_ERROR, str(error)) from None

        if request.digest is not None and hasher.hexdigest() != request.digest.hex:
            # The file goes with the whole directory once readers are done with it.
            self._session.remove_task(handle.info_hash)
            self._untrusted_in_swarm.add(request.key)
            self._metrics.digest_mismatches.labels(Source.SWARM).inc()
            raise DigestMismatch(
                f"digest mismatch: the swarm delivered sha256:{hasher.hexdigest()} for {request.key} "
                f"(torrent {handle.info_hash}); the blob was discarded"
            )

        self._cache.add(CacheEntry(request.key, directory, handle.path, handle.size, handle.info_hash), metainfo)
        self._update_cache_metrics()
        download._finish(hasher.hexdigest())
        log.info("blob downloaded through the swarm", extra={"digest": request.key, "bytes": handle.size})

    # The upstream.

    def _from_upstream(self, download: Download, directory: Path) -> None:
        """Download the blob from its upstream URL, following redirects."""
        request = download.request
        path = directory / "upstream" / "blob"
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        total = 0
        try:
            # Identity encoding, so the bytes on the wire are the blob's bytes.
            headers = {**request.headers, "Accept-Encoding": "identity"}
            with self._upstream.stream("GET", request.url, headers=headers) as response:
                if response.status_code != 200:
                    raise DownloadFailed(f"upstream returned status {response.status_code} to GET {request.url}")
                length = response.headers.get("content-length")
                size = int(length) if length and length.isdigit() else None
                if download.size is not None and size is not None and size != download.size:
                    raise DownloadFailed(
                        f"upstream GET {request.url} has Content-Length {size}, but its HEAD had {download.size}"
                    )
                download._start_file(path, Source.UPSTREAM, size)

                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    for chunk in response.iter_raw():
                        view = memoryview(chunk)
                        while view:
                            written = os.write(descriptor, view)
                            view = view[written:]
                        hasher.update(chunk)
                        total += len(chunk)
                        download._advance(len(chunk))
                finally:
                    os.close(descriptor)
        except httpx.HTTPError as error:
            raise DownloadFailed(f"upstream GET {request.url} failed: {error!r}") from None

        if download.size is not None and total != download.size:
            raise DownloadFailed(f"upstream GET {request.url} ended after {total} of {download.size} bytes")
        if request.digest is not None and hasher.hexdigest() != request.digest.hex:
            self._metrics.digest_mismatches.labels(Source.UPSTREAM).inc()
            raise DigestMismatch(
                f"digest mismatch: the upstream sent sha256:{hasher.hexdigest()} for {request.key}; "
                "the blob was discarded"
            )

        # NOTE: a blob from the upstream is cached but not seeded: the mirror
        # has no torrent of it that would match the seeder's.
        self._cache.add(CacheEntry(request.key, directory, path, total))
        self._update_cache_metrics()
        download._finish(hasher.hexdigest())
        log.info("blob downloaded from the upstream", extra={"digest": request.key, "bytes": total})

    def _update_cache_metrics(self) -> None:
        self._metrics.cache_bytes.set(self._cache.total_bytes())
        self._metrics.cache_blobs.set(len(self._cache))


def _discard_later(directory: Path) -> tuple[Path, Path]:
    """Move a failed download's directory aside and delete it after _DISCARD_DELAY_SECONDS.

    Returns (old, new) paths. The move frees the key for a new download at
    once; the cache deletes leftovers at its next start.
    """
    discarded = directory.with_name(f"{directory.name}.discarded-{uuid.uuid4().hex[:8]}")
    os.rename(directory, discarded)
    timer = threading.Timer(_DISCARD_DELAY_SECONDS, shutil.rmtree, args=(discarded,), kwargs={"ignore_errors": True})
    timer.daemon = True
    timer.start()
    return directory, discarded


def read_file(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Yield the bytes [start, end) of a cached blob."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise DownloadFailed(f"cached blob {path} was evicted before it could be read") from None
    try:
        position = start
        while position < end:
            chunk = os.pread(descriptor, min(CHUNK_BYTES, end - position), position)
            if not chunk:
                raise DownloadFailed(f"cached blob {path} is shorter than {end} bytes")
            position += len(chunk)
            yield chunk
    finally:
        os.close(descriptor)


def seed_cached(limits: HostLimits, entries: list[CacheEntry]) -> list[TaskHandle]:
    """Add the cached blobs that have a torrent to the session in seed mode, after a restart."""
    handles = []
    for entry in entries:
        if entry.info_hash is None or not entry.metainfo_path.exists():
            continue
        try:
            handle = limits.add_task(entry.metainfo_path.read_bytes(), entry.path.parent, seed_mode=True)
        except SwarmError as error:
            log.warning("seeding a cached blob failed", extra={"digest": entry.key, "error": str(error)})
            continue
        handles.append(handle)
    return handles
