"""The seeder's cache: content-addressed files and their torrents, under a byte quota.

Layout under the data directory:

    blobs/sha256/<hex>            the content, named by its sha256
    blobs/sha256/<hex>.torrent    its metainfo, whose name is <hex> too, so
                                  libtorrent finds the file in blobs/sha256/
    tasks/<sha256 of task id>     the hex of a task's content, one line
    tmp/                          downloads in progress; emptied at start

A file enters `blobs/` only by a rename from `tmp/` once it is complete and
verified, so a failed ingest leaves nothing there. The least recently used
file (by modification time, which `touch` updates) is evicted first, unless
`in_use` returns True because a swarm still needs it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seeder.errors import FailureCause, IngestError
from seeder.metainfo import Metainfo, read_metainfo

log = logging.getLogger(__name__)


@dataclass
class CachedFile:
    """One complete file in the cache."""

    sha256: str  # hex, also the file name
    path: Path
    metainfo: Metainfo
    last_used: float  # seconds since the epoch

    @property
    def size(self) -> int:
        return self.metainfo.size


class Cache:
    """Content-addressed files under `root`, at most `quota` bytes (0: no quota)."""

    def __init__(
        self,
        root: Path,
        quota: int,
        *,
        in_use: Callable[[CachedFile], bool] = lambda cached: False,
        on_evict: Callable[[CachedFile], None] = lambda cached: None,
    ) -> None:
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        self.task_index = root / "tasks"
        self.quota = quota
        self.in_use = in_use
        self.on_evict = on_evict
        self._lock = threading.Lock()
        self._files: dict[str, CachedFile] = {}
        self._reserved: dict[str, int] = {}

        for directory in (self.blobs, self.tmp, self.task_index):
            directory.mkdir(parents=True, exist_ok=True)
        # Leftovers of ingests that a crash interrupted: never complete, never verified.
        for leftover in self.tmp.iterdir():
            _remove(leftover)
        self._scan()

    def _scan(self) -> None:
        for torrent in self.blobs.glob("*.torrent"):
            sha256 = torrent.name.removesuffix(".torrent")
            path = self.blobs / sha256
            try:
                metainfo = read_metainfo(torrent.read_bytes())
                size = path.stat().st_size
            except (OSError, ValueError) as error:
                log.warning("dropping a cached file that is incomplete", extra={"digest": f"sha256:{sha256}", "error": str(error)})
                _remove(torrent)
                _remove(path)
                continue
            if size != metainfo.size or metainfo.name != sha256:
                log.warning(
                    "dropping a cached file whose size or name does not match its torrent",
                    extra={"digest": f"sha256:{sha256}", "bytes": size, "expected": metainfo.size},
                )
                _remove(torrent)
                _remove(path)
                continue
            self._files[sha256] = CachedFile(sha256, path, metainfo, path.stat().st_mtime)

        # A content file without its torrent was being committed when the process stopped.
        for path in self.blobs.iterdir():
            if not path.name.endswith(".torrent") and path.name not in self._files:
                _remove(path)

    # Reading.

    def files(self) -> list[CachedFile]:
        with self._lock:
            return list(self._files.values())

    def get(self, sha256: str) -> CachedFile | None:
        with self._lock:
            return self._files.get(sha256)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(cached.size for cached in self._files.values())

    def touch(self, sha256: str) -> None:
        """Mark a file as just used, for the eviction order."""
        with self._lock:
            cached = self._files.get(sha256)
            if cached is None:
                return
            cached.last_used = time.time()
        try:
            os.utime(cached.path)
        except OSError as error:
            log.warning("cannot update a cached file's time", extra={"digest": f"sha256:{sha256}", "error": str(error)})

    # Task ids, which may be keyed by URL, map to content.

    def task_content(self, task_id: str) -> str | None:
        """Return the sha256 hex of a task's cached content, or None."""
        try:
            sha256 = (self.task_index / _task_key(task_id)).read_text().strip()
        except FileNotFoundError:
            return None
        return sha256 if self.get(sha256) else None

    def remember_task(self, task_id: str, sha256: str) -> None:
        _write_atomically(self.task_index / _task_key(task_id), sha256.encode() + b"\n", self.tmp)

    # Writing.

    def new_temp_file(self) -> Path:
        file = tempfile.NamedTemporaryFile(dir=self.tmp, prefix="ingest-", suffix=".part", delete=False)
        file.close()
        return Path(file.name)

    def reserve(self, key: str, size: int) -> None:
        """Make room for `size` more bytes for the ingest `key`, evicting unused files as needed.

        Raises IngestError when the file exceeds the quota, or when the files
        that swarms are using leave no room for it.
        """
        if self.quota and size > self.quota:
            raise IngestError(
                f"the content has {size} bytes, more than the seeder's cache_quota of {self.quota} bytes",
                FailureCause.TOO_LARGE,
            )
        evicted: list[CachedFile] = []
        with self._lock:
            self._reserved[key] = size
            if self.quota:
                evicted = self._evict_for(size, key)
        for cached in evicted:
            self._delete(cached)

    def _evict_for(self, size: int, key: str) -> list[CachedFile]:
        used = sum(cached.size for cached in self._files.values())
        reserved = sum(self._reserved.values())
        evicted = []
        for cached in sorted(self._files.values(), key=lambda cached: cached.last_used):
            if used + reserved <= self.quota:
                break
            if self.in_use(cached):
                continue
            del self._files[cached.sha256]
            used -= cached.size
            evicted.append(cached)
        if used + reserved > self.quota:
            del self._reserved[key]
            # Put back what was taken: nothing is evicted for an ingest that cannot run.
            for cached in evicted:
                self._files[cached.sha256] = cached
            raise IngestError(
                f"the cache has no room for {size} bytes: {used} bytes are cached and in use by swarms, "
                f"{reserved - size} reserved for other ingests, and cache_quota is {self.quota} bytes",
                FailureCause.TOO_LARGE,
            )
        return evicted

    def release(self, key: str) -> None:
        with self._lock:
            self._reserved.pop(key, None)

    def commit(self, key: str, temp_path: Path, sha256: str, metainfo: Metainfo) -> CachedFile:
        """Move a verified download into the cache with its torrent; return the cached file.

        When the content is cached already, the temp file is removed and the
        cached file is returned.
        """
        try:
            with self._lock:
                existing = self._files.get(sha256)
            if existing is not None:
                _remove(temp_path)
                self.touch(sha256)
                return existing

            path = self.blobs / sha256
            os.replace(temp_path, path)
            _write_atomically(self.blobs / f"{sha256}.torrent", metainfo.data, self.tmp)
            cached = CachedFile(sha256, path, metainfo, time.time())
            with self._lock:
                self._files[sha256] = cached
            return cached
        finally:
            self.release(key)

    def replace_metainfo(self, sha256: str, metainfo: Metainfo) -> None:
        """Store a new torrent for cached content, as when the announce URL changed."""
        _write_atomically(self.blobs / f"{sha256}.torrent", metainfo.data, self.tmp)
        with self._lock:
            cached = self._files.get(sha256)
            if cached is not None:
                cached.metainfo = metainfo

    def _delete(self, cached: CachedFile) -> None:
        log.info("evicting a cached file", extra={"digest": f"sha256:{cached.sha256}", "bytes": cached.size})
        self.on_evict(cached)
        _remove(self.blobs / f"{cached.sha256}.torrent")
        _remove(cached.path)


def _task_key(task_id: str) -> str:
    # Task ids contain ':' and may be long; a hash makes a safe file name.
    return hashlib.sha256(task_id.encode()).hexdigest()


def _write_atomically(path: Path, data: bytes, tmp: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=tmp, prefix="write-", delete=False) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(file.name, path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
