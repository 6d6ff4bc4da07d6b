"""Build small test torrents with libtorrent's own creator, independent of the seeder's builder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import libtorrent as lt


def write_random_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`; return their sha256 hex."""
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            hasher.update(chunk)
            file.write(chunk)
            remaining -= len(chunk)
    return hasher.hexdigest()


def make_torrent(path: Path, announce: str, piece_length: int = 256 * 1024) -> bytes:
    """Return a private single-file v1 torrent of `path`, announcing to `announce`."""
    storage = lt.file_storage()
    lt.add_files(storage, str(path))
    # libtorrent 2.1 deprecates building from a file_storage, but 2.0.x, which
    # pyproject.toml also allows, has no other way.
    creator = lt.create_torrent(storage, piece_length, flags=lt.create_torrent.v1_only)
    creator.add_tracker(announce)
    creator.set_priv(True)
    lt.set_piece_hashes(creator, str(path.parent))
    return lt.bencode(creator.generate())
