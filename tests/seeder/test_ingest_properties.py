"""Ingests of generated sizes, range layouts and broken connections always give the origin's bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import bencodepy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.tasks import IngestRequest
from seeder.cache import Cache
from seeder.ingest import Ingest
from seeder.origin import FetchOptions
from seeder.pieces import KIB
from tests.support.origin import Origin

PIECE = 16 * KIB

# Sizes around the piece and segment boundaries, where off-by-one errors live.
sizes = st.one_of(
    st.integers(0, 3),
    st.integers(1, 12).flatmap(lambda pieces: st.sampled_from([pieces * PIECE - 1, pieces * PIECE, pieces * PIECE + 1])),
    st.integers(0, 400 * KIB),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=sizes,
    parallel_ranges=st.integers(1, 4),
    segment_pieces=st.integers(1, 5),
    hash_buffer_pieces=st.integers(0, 8),
    cut_fraction=st.one_of(st.none(), st.floats(0.01, 0.99)),
    ranges=st.booleans(),
    content_length=st.booleans(),
)
def test_ingest_matches_origin(
    size, parallel_ranges, segment_pieces, hash_buffer_pieces, cut_fraction, ranges, content_length
):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "origin").mkdir()
        data = os.urandom(size)
        (root / "origin" / "file.bin").write_bytes(data)
        options = FetchOptions(
            attempts=3,
            retry_max_delay=0.1,
            parallel_ranges=parallel_ranges,
            segment_size=segment_pieces * PIECE,
            hash_buffer=hash_buffer_pieces * PIECE,
        )

        with Origin(root / "origin") as origin:
            if not ranges:
                origin.disable_ranges("/file.bin")
            if not content_length:
                origin.omit_content_length("/file.bin")
            # A cut is only detectable when the body's end is known.
            if cut_fraction is not None and size > 1 and (ranges or content_length):
                origin.cut("/file.bin", at=max(1, int(size * cut_fraction)))
            request = IngestRequest(
                task_id="url:file",
                url=origin.url("/file.bin"),
                piece_length=PIECE,
                announce_url="http://127.0.0.1:9/announce",
            )
            cache = Cache(root / "data", quota=0)

            cached = Ingest(request, cache, options).run()

        assert cached.sha256 == hashlib.sha256(data).hexdigest()
        assert cached.path.read_bytes() == data
        pieces = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, size, PIECE))
        assert cached.metainfo.size == size
        assert read_pieces(cached.metainfo.data) == pieces
        assert list(cache.tmp.iterdir()) == []


def read_pieces(metainfo: bytes) -> bytes:
    return bencodepy.decode(metainfo)[b"info"][b"pieces"]
