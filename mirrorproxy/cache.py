"""The blob cache on disk: one directory per blob, evicted least recently used under a byte quota.

Layout under the cache root, one directory per key (`sha256-<hex>` for a
digest, `url-<hex>` for a URL fetched without one):

    <key>/swarm/<torrent name>   the bytes, where libtorrent downloads and seeds them
    <key>/upstream/blob          or the bytes, when they came from the upstream
    <key>/metainfo.torrent       the torrent, so the blob is seeded again after a restart
    <key>/entry.json             written last: a directory without it is an unfinished download

The modification time of entry.json is the entry's last use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
METAINFO_FILE = "metainfo.torrent"


def key_directory_name(key: str) -> str:
    """Return the directory name of a cache key: `sha256:<hex>` -> `sha256-<hex>`."""
    return key.replace(":", "-")


@dataclass(frozen=True)
class CacheEntry:
    """One finished, verified blob in the cache."""

    key: str
    directory: Path
    path: Path
    size: int
    info_hash: str | None = None

    @property
    def metainfo_path(self) -> Path:
        return self.directory / METAINFO_FILE


class BlobCache:
    """Finished blobs by key, with LRU eviction once their total size passes `quota` bytes.

    `on_evict` is called for each evicted entry before its directory is
    deleted, so the swarm can stop seeding it.
    """

    def __init__(self, root: Path, quota: int, on_evict: Callable[[CacheEntry], None] | None = None):
        self.root = root
        self.quota = quota
        self._on_evict = on_evict
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def load(self) -> list[CacheEntry]:
        """Read the entries left by an earlier run; delete unfinished downloads. Return the entries."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for directory in self.root.iterdir():
            entry = self._read_entry(directory)
            if entry is None:
                log.info("deleting an unfinished download", extra={"path": str(directory)})
                shutil.rmtree(directory, ignore_errors=True)
                continue
            found.append((os.stat(directory / ENTRY_FILE).st_mtime, entry))

        with self._lock:
            for _, entry in sorted(found, key=lambda item: item[0]):
                self._entries[entry.key] = entry
        self.evict()
        return list(self._entries.values())

    def _read_entry(self, directory: Path) -> CacheEntry | None:
        try:
            record = json.loads((directory / ENTRY_FILE).read_text())
            path = directory / record["path"]
            size = int(record["size"])
            if not path.is_file() or path.stat().st_size != size:
                return None
            return CacheEntry(record["key"], directory, path, size, record.get("info_hash"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def directory_for(self, key: str) -> Path:
        """Return an empty directory for a new download of `key`."""
        directory = self.root / key_directory_name(key)
        with self._lock:
            if key in self._entries:
                raise RuntimeError(f"{key} is already cached; read it instead of downloading it again")
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def get(self, key: str) -> CacheEntry | None:
        """Return the entry of `key` and mark it used, or None when it is not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        try:
            os.utime(entry.directory / ENTRY_FILE)
        except FileNotFoundError:
            # Evicted between the lookup and now; readers that opened the
            # file before still read it.
            return None
        return entry

    def add(self, entry: CacheEntry, metainfo: bytes | None = None) -> None:
        """Record a finished, verified download, then evict down to the quota."""
        if metainfo is not None:
            entry.metainfo_path.write_bytes(metainfo)
        record = {
            "key": entry.key,
            "path": str(entry.path.relative_to(entry.directory)),
            "size": entry.size,
            "info_hash": entry.info_hash,
        }
        temporary = entry.directory / (ENTRY_FILE + ".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, entry.directory / ENTRY_FILE)

        with self._lock:
            self._entries[entry.key] = entry
            self._entries.move_to_end(entry.key)
        self.evict()

    def remove(self, key: str) -> None:
        """Drop `key` from the cache and delete its directory."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            self._delete(entry)

    def evict(self) -> None:
        """Delete least recently used entries until the total size is within the quota."""
        while True:
            with self._lock:
                if self.total_bytes() <= self.quota or not self._entries:
                    return
                _, entry = self._entries.popitem(last=False)
            log.info("evicting blob from the cache", extra={"digest": entry.key, "bytes": entry.size})
            self.evictions += 1
            self._delete(entry)

    def _delete(self, entry: CacheEntry) -> None:
        if self._on_evict is not None:
            try:
                self._on_evict(entry)
            except Exception:
                log.exception("stopping the seeding of an evicted blob failed", extra={"digest": entry.key})
        shutil.rmtree(entry.directory, ignore_errors=True)

    def total_bytes(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
