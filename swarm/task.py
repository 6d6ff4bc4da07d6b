"""One task in the session: its progress, completion and in-order streaming of its bytes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from swarm.errors import SwarmError

# Pieces ahead of the reader that get a deadline, so libtorrent fetches them
# first and in order while the rest of the torrent still downloads rarest-first.
_READ_AHEAD_PIECES = 8

# Largest chunk handed to a consumer at once; bounds memory per reader.
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class TaskProgress:
    """A snapshot of one task; byte counts are payload bytes, rates in bytes per second.

    `bytes_from_seeder` and `bytes_from_peers` split the verified bytes by the
    share of blocks each kind of peer sent: an estimate, exact when one kind
    sent everything.
    """

    size: int
    bytes_done: int
    download_rate: int
    upload_rate: int
    peers: int
    seeds: int
    bytes_from_seeder: int
    bytes_from_peers: int
    uploaded: int
    hash_failures: int
    complete: bool


class TaskHandle:
    """A single-file v1 torrent added to a Session."""

    def __init__(self, handle: lt.torrent_handle, info: lt.torrent_info, save_path: Path, seeder_prefix: bytes):
        self._handle = handle
        self._info = info
        self.save_path = save_path
        self.info_hash = str(info.info_hashes().v1)
        self.name = info.name()
        self.size = info.total_size()
        self.piece_length = info.piece_length()
        self.num_pieces = info.num_pieces()
        self.path = save_path / info.layout().file_path(0)

        self._seeder_prefix = seeder_prefix
        self._changed = threading.Condition()
        self._complete = False
        self._error: str | None = None
        self._hash_failures = 0
        # Payload bytes received per 16 KiB block, split by whether the sending
        # peer is a seeder. libtorrent 2.1 posts no block_finished_alert for
        # some blocks (about one piece in twenty on loopback), so these counts
        # only give the split. progress() scales it to the verified bytes.
        self._received_from_seeder = 0
        self._received_from_peers = 0

        # Pieces read through libtorrent for streaming readers: libtorrent 2.1
        # keeps freshly written blocks in a store buffer, so a piece that just
        # passed its hash check may not be in the file yet. Readers of one piece
        # share the buffer; it is dropped when the last of them has taken it.
        self._piece_readers: dict[int, int] = {}
        self._piece_buffers: dict[int, bytes | str] = {}
        self._finishing = False

    # Events from the alert pump.

    def _on_piece_finished(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _on_finished(self) -> None:
        # Complete only once the data is in the file, not in the store buffer:
        # the flush requested now covers every block written before it.
        with self._changed:
            self._finishing = True
        self._handle.flush_cache()

    def _on_cache_flushed(self) -> None:
        with self._changed:
            if self._finishing:
                self._complete = True
            self._changed.notify_all()

    def _on_read_piece(self, piece: int, buffer: bytes, error: str | None) -> None:
        with self._changed:
            if piece in self._piece_readers:
                self._piece_buffers[piece] = error if error else buffer
                self._changed.notify_all()

    def _on_error(self, message: str) -> None:
        with self._changed:
            self._error = message
            self._changed.notify_all()

    def _on_hash_failed(self) -> None:
        with self._changed:
            self._hash_failures += 1

    def _on_block_finished(self, piece: int, block: int, peer_id: bytes) -> None:
        block_size = 16 * 1024
        size = min(block_size, self._info.piece_size(piece) - block * block_size)
        if peer_id.startswith(self._seeder_prefix):
            self._received_from_seeder += size
        else:
            self._received_from_peers += size

    # Public API.

    @property
    def is_complete(self) -> bool:
        return self._complete

    @property
    def error(self) -> str | None:
        return self._error

    def progress(self) -> TaskProgress:
        status = self._handle.status()
        counted = self._received_from_seeder + self._received_from_peers
        from_seeder = round(status.total_wanted_done * self._received_from_seeder / counted) if counted else 0
        from_peers = status.total_wanted_done - from_seeder if counted else 0
        return TaskProgress(
            size=self.size,
            bytes_done=status.total_wanted_done,
            download_rate=status.download_payload_rate,
            upload_rate=status.upload_payload_rate,
            peers=status.num_peers,
            seeds=status.num_seeds,
            bytes_from_seeder=from_seeder,
            bytes_from_peers=from_peers,
            uploaded=status.all_time_upload,
            hash_failures=self._hash_failures,
            complete=self.is_complete,
        )

    def wait_complete(self, timeout: float) -> None:
        """Block until every piece is downloaded and verified.

        Raises SwarmError when libtorrent reports an error for the task, and
        TimeoutError when `timeout` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._error:
                    raise SwarmError(self._error)
                if self.is_complete:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {self.info_hash} not complete after {timeout:.0f} s")
                self._changed.wait(min(remaining, 1.0))

    def reannounce(self) -> None:
        """Announce to the tracker now instead of at the next interval, e.g. after the tracker restarted."""
        self._handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

    def set_limits(self, upload: int, download: int) -> None:
        """Set this task's upload and download limits in bytes/s; 0 means no limit."""
        self._handle.set_upload_limit(upload or -1)
        self._handle.set_download_limit(download or -1)

    def stream(self, start: int = 0, end: int | None = None, stall_timeout: float = 60.0) -> Iterator[bytes]:
        """Yield the bytes [start, end) in order, each as soon as its piece is verified.

        Raises TimeoutError when no wanted piece arrives for `stall_timeout`
        seconds, and SwarmError when the task fails.
        """
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return
        first_piece = start // self.piece_length
        last_piece = (end - 1) // self.piece_length

        position = start
        for piece in range(first_piece, last_piece + 1):
            piece_start = piece * self.piece_length
            piece_end = min(piece_start + self.piece_length, end)

            if self._complete:
                # The whole file is flushed: read the rest straight from disk.
                yield from self._read_file(position, end)
                return

            self._request_ahead(piece, last_piece)
            self._wait_for_piece(piece, stall_timeout)
            if self._complete:
                yield from self._read_file(position, end)
                return

            buffer = self._read_piece(piece, stall_timeout)
            view = memoryview(buffer)[position - piece_start : piece_end - piece_start]
            for offset in range(0, len(view), _CHUNK_BYTES):
                yield bytes(view[offset : offset + _CHUNK_BYTES])
            position = piece_end

    def _read_file(self, start: int, end: int) -> Iterator[bytes]:
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            position = start
            while position < end:
                chunk = os.pread(descriptor, min(_CHUNK_BYTES, end - position), position)
                if not chunk:
                    raise SwarmError(f"{self.path} is shorter than its torrent's length: no data at byte {position}; the file was truncated, re-fetch it")
                position += len(chunk)
                yield chunk
        finally:
            os.close(descriptor)

    def _read_piece(self, piece: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._changed:
            self._piece_readers[piece] = self._piece_readers.get(piece, 0) + 1
            if self._piece_readers[piece] == 1:
                self._handle.read_piece(piece)
            try:
                while piece not in self._piece_buffers:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"task {self.info_hash}: reading piece {piece} took over {timeout:.0f} s")
                    self._changed.wait(min(remaining, 0.5))
                result = self._piece_buffers[piece]
            finally:
                self._piece_readers[piece] -= 1
                if self._piece_readers[piece] == 0:
                    del self._piece_readers[piece]
                    self._piece_buffers.pop(piece, None)
        if isinstance(result, str):
            raise SwarmError(f"task {self.info_hash}: reading piece {piece} failed: {result}")
        return result

    def _request_ahead(self, piece: int, last_piece: int) -> None:
        if self._complete:
            return
        for offset, ahead in enumerate(range(piece, min(piece + _READ_AHEAD_PIECES, last_piece + 1))):
            if not self._handle.have_piece(ahead):
                # Deadlines in milliseconds, increasing with distance, so the
                # pieces arrive in reading order.
                self._handle.set_piece_deadline(ahead, 100 * (offset + 1))

    def _wait_for_piece(self, piece: int, stall_timeout: float) -> None:
        deadline = time.monotonic() + stall_timeout
        with self._changed:
            while not (self._complete or self._handle.have_piece(piece)):
                if self._error:
                    raise SwarmError(self._error)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"task {self.info_hash}: piece {piece} did not arrive within {stall_timeout:.0f} s"
                    )
                self._changed.wait(min(remaining, 0.5))
