"""Hashing chunks as they arrive, in order and out of order, against hashlib over the whole file."""

from __future__ import annotations

import hashlib
import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from seeder.hashing import CandidatePieceHashers, OrderedSha256, PieceHasher, join_digests
from seeder.pieces import CANDIDATE_PIECE_LENGTHS, choose_piece_length


def split(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """Split `data` at the given offsets into (offset, chunk) pairs."""
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [(start, data[start:end]) for start, end in zip(points, points[1:]) if end > start]


def reference_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=20), piece_length=st.sampled_from([16, 64, 1000]))
def test_piece_hasher_any_chunking(data, cuts, piece_length):
    digests: list[bytes | None] = []
    hasher = PieceHasher(piece_length, digests)

    for _, chunk in split(data, cuts):
        hasher.update(chunk)
    hasher.finish()

    assert join_digests(digests) == reference_pieces(data, piece_length)


@given(data=st.binary(min_size=1, max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=30), seed=st.integers())
def test_ordered_sha256_any_arrival_order(data, cuts, seed):
    chunks = split(data, cuts)
    random.Random(seed).shuffle(chunks)
    sha256 = OrderedSha256(buffer_limit=len(data))

    for offset, chunk in chunks:
        sha256.feed(offset, chunk)

    assert sha256.hexdigest(len(data)) == hashlib.sha256(data).hexdigest()
    assert sha256.held_bytes == 0


def test_ordered_sha256_holds_chunks_ahead_of_the_frontier():
    sha256 = OrderedSha256(buffer_limit=100)

    sha256.feed(10, b"b" * 10)
    held_before = sha256.held_bytes
    frontier_before = sha256.frontier
    sha256.feed(0, b"a" * 10)

    assert held_before == 10
    assert frontier_before == 0
    assert sha256.frontier == 20
    assert sha256.held_bytes == 0


def test_ordered_sha256_from_threads():
    data = random.randbytes(4 * 1024 * 1024)
    segment = 256 * 1024
    sha256 = OrderedSha256(buffer_limit=4 * segment)
    starts = list(range(0, len(data), segment))
    lock = threading.Lock()
    peak = [0]

    def worker(indexes):
        for start in indexes:
            assert sha256.wait_for_room(start + segment, timeout=10)
            for offset in range(start, start + segment, 4096):
                sha256.feed(offset, data[offset : offset + 4096])
                with lock:
                    peak[0] = max(peak[0], sha256.held_bytes)

    # Segments dealt round-robin, as the range workers take them in file order.
    threads = [threading.Thread(target=worker, args=(starts[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sha256.hexdigest(len(data)) == hashlib.sha256(data).hexdigest()
    assert peak[0] <= 4 * segment


def test_wait_for_room_blocks_until_the_frontier_moves():
    sha256 = OrderedSha256(buffer_limit=100)

    assert sha256.wait_for_room(100, timeout=0)
    assert not sha256.wait_for_room(101, timeout=0.05)
    sha256.feed(0, b"x")
    assert sha256.wait_for_room(101, timeout=0)


def test_abort_wakes_waiters():
    sha256 = OrderedSha256(buffer_limit=10)
    results = []
    thread = threading.Thread(target=lambda: results.append(sha256.wait_for_room(1000, timeout=10)))
    thread.start()

    sha256.abort()
    thread.join(timeout=5)

    assert results == [False]


@settings(max_examples=20, deadline=None)
@given(size=st.integers(0, 3 * 1024 * 1024), cut=st.integers(1, 100_000))
def test_candidate_hashers_match_the_chosen_length(size, cut):
    data = random.Random(size).randbytes(size)
    hashers = CandidatePieceHashers(CANDIDATE_PIECE_LENGTHS, choose_piece_length)

    for start in range(0, size, cut):
        hashers.update(data[start : start + cut])
    piece_length, pieces = hashers.finish()

    assert piece_length == choose_piece_length(size)
    assert pieces == reference_pieces(data, piece_length)


def test_candidate_hashers_drop_small_lengths():
    def choose(size: int) -> int:
        for length in (16, 32):
            if size <= 2 * length:
                return length
        return 64

    hashers = CandidatePieceHashers((16, 32, 64), choose)

    hashers.update(b"x" * 65)

    assert sorted(hashers._hashers) == [64]
