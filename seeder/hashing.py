"""Hashing a download while it arrives: SHA-1 per piece and sha256 of the whole file.

Every byte from the origin is hashed once, from the buffer it arrived in, and
is never read back from disk. How that works with parallel ranges:

- The file is split into segments of whole pieces, and each ranged request
  fetches one segment. A worker feeds its segment's bytes, in order, to a
  `PieceHasher` of its own, so the SHA-1 of every piece is computed by the
  worker that received it, in parallel with the others.
- The sha256 must see the bytes in file order. `OrderedSha256` hashes a chunk
  at once when it starts where the hash stands (the frontier), and keeps a
  chunk that arrived ahead of it in memory until the frontier reaches it.
- Segments are handed out in file order, and a worker starts a segment only
  when the segment ends within `hash_buffer` bytes of the frontier
  (`OrderedSha256.wait_for_room`). The bytes held for the sha256 are
  therefore at most `hash_buffer`, whatever the size of the file. The worker
  on the frontier segment never waits, so the hash always makes progress.
"""

from __future__ import annotations

import hashlib
import threading


class PieceHasher:
    """SHA-1 of consecutive pieces, fed with the bytes of a piece-aligned span in order.

    The digests go into `digests` (one slot per piece of the file), at the
    index of each piece, so hashers of different spans share one list.
    """

    def __init__(self, piece_length: int, digests: list[bytes | None], first_piece: int = 0) -> None:
        self.piece_length = piece_length
        self.digests = digests
        self._index = first_piece
        self._hash = hashlib.sha1()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.piece_length - self._filled)
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.piece_length:
                self._finish_piece()

    def finish(self) -> None:
        """Close the last, shorter piece of the file, if one is open."""
        if self._filled:
            self._finish_piece()

    def _finish_piece(self) -> None:
        self._store(self._index, self._hash.digest())
        self._index += 1
        self._hash = hashlib.sha1()
        self._filled = 0

    def _store(self, index: int, digest: bytes) -> None:
        if index >= len(self.digests):
            self.digests.extend([None] * (index + 1 - len(self.digests)))
        self.digests[index] = digest


class CandidatePieceHashers:
    """Piece hashes for several piece lengths at once, for a body of unknown size.

    The piece length depends on the size, which a response without
    Content-Length reveals only at its end. Each chunk is hashed for every
    length the size could still lead to, so the pieces are ready when the
    body ends. NOTE: this costs up to one SHA-1 pass per candidate length (at
    most seven) over such a body, instead of one.
    """

    def __init__(self, lengths: tuple[int, ...], choose) -> None:
        self._choose = choose
        self._hashers = {length: PieceHasher(length, []) for length in lengths}
        self._size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._size += len(data)
        for hasher in self._hashers.values():
            hasher.update(data)
        # Drop the lengths that already give too many pieces: the size only grows.
        smallest = self._choose(self._size)
        for length in [length for length in self._hashers if length < smallest]:
            del self._hashers[length]

    def finish(self) -> tuple[int, bytes]:
        """Return the piece length chosen for the final size and its piece hashes."""
        length = self._choose(self._size)
        hasher = self._hashers[length]
        hasher.finish()
        return length, join_digests(hasher.digests)


class OrderedSha256:
    """sha256 of a file whose chunks arrive out of order from parallel ranges.

    `feed` hashes a chunk at the frontier right away, together with the held
    chunks it makes contiguous, and keeps a chunk that lies ahead of the
    frontier. Chunks never overlap: each byte range is fed once.
    """

    def __init__(self, buffer_limit: int) -> None:
        self.buffer_limit = buffer_limit
        self._hash = hashlib.sha256()
        self._frontier = 0
        self._held: dict[int, bytes] = {}
        self._held_bytes = 0
        self._draining = False
        self._aborted = False
        self._changed = threading.Condition()

    @property
    def frontier(self) -> int:
        """Bytes hashed so far, from the start of the file."""
        with self._changed:
            return self._frontier

    @property
    def held_bytes(self) -> int:
        with self._changed:
            return self._held_bytes

    def feed(self, offset: int, data: bytes) -> None:
        with self._changed:
            if self._draining or offset != self._frontier:
                self._held[offset] = data
                self._held_bytes += len(data)
                return
            # This thread becomes the one that hashes; the lock is released
            # while it hashes so that other workers can keep handing in chunks.
            self._draining = True

        while True:
            self._hash.update(data)
            with self._changed:
                self._frontier += len(data)
                data = self._held.pop(self._frontier, None)
                if data is None:
                    self._draining = False
                    self._changed.notify_all()
                    return
                self._held_bytes -= len(data)

    def wait_for_room(self, end: int, timeout: float | None = None) -> bool:
        """Block until bytes up to `end` fit in the buffer limit; False when aborted or timed out."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._aborted or end - self._frontier <= self.buffer_limit, timeout
            ) and not self._aborted

    def abort(self) -> None:
        """Wake every waiting worker, and drop what is held; the hash is then useless."""
        with self._changed:
            self._aborted = True
            self._held.clear()
            self._held_bytes = 0
            self._changed.notify_all()

    def hexdigest(self, size: int) -> str:
        """Return the sha256 of the whole file, once its `size` bytes were fed."""
        with self._changed:
            if self._frontier != size or self._draining:
                raise RuntimeError(f"sha256 covers {self._frontier} of {size} bytes")
            return self._hash.hexdigest()


def join_digests(digests: list[bytes | None]) -> bytes:
    """Concatenate piece digests; a missing one means a range was never fed."""
    missing = [index for index, digest in enumerate(digests) if digest is None]
    if missing:
        raise RuntimeError(f"pieces {missing[:5]} were never hashed")
    return b"".join(digests)  # type: ignore[arg-type]
