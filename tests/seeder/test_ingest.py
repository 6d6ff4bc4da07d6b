"""The ingest against a real HTTP origin on loopback: fetch, hash, verify, cache."""

from __future__ import annotations

import hashlib
import time

import libtorrent as lt
import pytest

from seeder.cache import Cache
from seeder.errors import FailureCause, IngestError
from seeder.origin import FetchOptions
from seeder.pieces import KIB, MIB
from tests.seeder.conftest import FAST_RETRIES, put_file, request_for, run_ingest, sha256_of
from tests.support.origin import SIGNATURE_PARAMETER


def expected_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


def assert_cached_correctly(cache: Cache, data: bytes, cached) -> None:
    assert cached.sha256 == sha256_of(data)
    assert cached.path == cache.blobs / sha256_of(data)
    assert cached.path.read_bytes() == data
    assert (cache.blobs / f"{cached.sha256}.torrent").read_bytes() == cached.metainfo.data
    assert list(cache.tmp.iterdir()) == []
    if data:
        info = lt.torrent_info(lt.bdecode(cached.metainfo.data))
        assert info.total_size() == len(data)
        assert str(info.info_hashes().v1) == cached.metainfo.info_hash
        assert info.priv()
        pieces = b"".join(bytes(info.hash_for_piece(i)) for i in range(info.num_pieces()))
        assert pieces == expected_pieces(data, cached.metainfo.piece_length)


def assert_nothing_cached(cache: Cache) -> None:
    assert list(cache.blobs.iterdir()) == []
    assert list(cache.tmp.iterdir()) == []
    assert cache.used_bytes() == 0


@pytest.mark.parametrize(
    "size",
    [0, 1, 256 * KIB, 256 * KIB + 1, 5 * MIB + 3],
    ids=["empty", "one-byte", "one-piece", "one-piece-plus-one", "several-segments"],
)
def test_sizes(origin, cache, size):
    data = put_file(origin, "file.bin", size)

    cached = run_ingest(cache, request_for(origin, "file.bin"))

    assert_cached_correctly(cache, data, cached)
    assert cached.size == size
    # The probe of the first byte is the only byte sent twice.
    assert origin.bytes_sent("/file.bin") == size + (1 if size else 0)


@pytest.mark.parametrize("ranges", [False, True], ids=["no-ranges", "ranges"])
def test_no_content_length(origin, cache, ranges):
    data = put_file(origin, "stream.bin", 700 * KIB + 5)
    origin.omit_content_length("/stream.bin")
    if not ranges:
        origin.disable_ranges("/stream.bin")

    cached = run_ingest(cache, request_for(origin, "stream.bin"))

    assert_cached_correctly(cache, data, cached)
    assert cached.metainfo.piece_length == 256 * KIB


def test_no_content_length_large_enough_for_bigger_pieces(origin, cache):
    # 512 KiB pieces would need more than 500 MiB, so the task requests a
    # length instead, and the hasher must use it without knowing the size.
    data = put_file(origin, "stream.bin", 3 * MIB + 17)
    origin.omit_content_length("/stream.bin")
    origin.disable_ranges("/stream.bin")

    cached = run_ingest(cache, request_for(origin, "stream.bin", piece_length=64 * KIB))

    assert_cached_correctly(cache, data, cached)
    assert cached.metainfo.piece_length == 64 * KIB


def test_redirect_to_signed_url(origin, cache):
    data = put_file(origin, "layer.tar", 2 * MIB)
    origin.redirect("/layer.tar")

    cached = run_ingest(cache, request_for(origin, "layer.tar"))

    assert_cached_correctly(cache, data, cached)
    requests = origin.requests("/layer.tar")
    redirects = [record for record in requests if record.status == 307]
    served = [record for record in requests if record.status == 206]
    assert redirects
    assert served
    assert all(SIGNATURE_PARAMETER in record.query for record in served)
    # Each request starts from the task's URL, so every signature is fresh.
    assert len({record.query for record in served}) == len(served)


def test_origin_404(origin, cache):
    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "missing.bin"))

    assert str(raised.value) == f"origin returned 404 for {origin.url('/missing.bin')}"
    assert raised.value.cause == FailureCause.ORIGIN_STATUS
    assert len(origin.requests("/missing.bin")) == 1
    assert_nothing_cached(cache)


def test_origin_500_retried_then_failed(origin, cache):
    put_file(origin, "flaky.bin", 1000)
    origin.fail("/flaky.bin", 500)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "flaky.bin"))

    assert str(raised.value) == f"origin returned 500 for {origin.url('/flaky.bin')} after 3 attempts"
    assert [record.status for record in origin.requests("/flaky.bin")] == [500, 500, 500]
    assert_nothing_cached(cache)


def test_origin_500_then_recovers(origin, cache):
    data = put_file(origin, "flaky.bin", 300 * KIB)
    origin.fail("/flaky.bin", 503, times=2)

    cached = run_ingest(cache, request_for(origin, "flaky.bin"))

    assert_cached_correctly(cache, data, cached)


def test_origin_429_honours_retry_after(origin, cache):
    data = put_file(origin, "busy.bin", 10 * KIB)
    origin.fail("/busy.bin", 429, times=1, retry_after=1)

    cached = run_ingest(cache, request_for(origin, "busy.bin"))

    assert_cached_correctly(cache, data, cached)
    first, second = origin.requests("/busy.bin")[:2]
    assert first.status == 429
    assert second.started - first.started >= 1.0


def test_origin_429_retry_after_too_long(origin, cache):
    put_file(origin, "busy.bin", 10 * KIB)
    origin.fail("/busy.bin", 429, retry_after=3600)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "busy.bin"))

    assert "429" in str(raised.value)
    assert "Retry-After of 3600 s" in str(raised.value)
    assert len(origin.requests("/busy.bin")) == 1
    assert_nothing_cached(cache)


def test_origin_429_every_time(origin, cache):
    put_file(origin, "busy.bin", 10 * KIB)
    origin.fail("/busy.bin", 429, retry_after=0)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "busy.bin"))

    assert str(raised.value) == f"origin returned 429 for {origin.url('/busy.bin')} after 3 attempts"
    assert_nothing_cached(cache)


def test_wrong_digest(origin, cache):
    data = put_file(origin, "file.bin", 600 * KIB)
    wrong = "sha256:" + "0" * 64

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "file.bin", digest=wrong))

    assert str(raised.value).startswith(f"digest mismatch: expected {wrong}, got sha256:{sha256_of(data)}")
    assert raised.value.cause == FailureCause.DIGEST_MISMATCH
    assert_nothing_cached(cache)


def test_right_digest(origin, cache):
    data = put_file(origin, "file.bin", 600 * KIB)

    cached = run_ingest(cache, request_for(origin, "file.bin", digest=f"sha256:{sha256_of(data)}"))

    assert_cached_correctly(cache, data, cached)


def test_cut_halfway_resumes_with_range(origin, cache):
    size = 3 * MIB + 11
    data = put_file(origin, "file.bin", size)
    origin.cut("/file.bin", at=size // 2)

    cached = run_ingest(cache, request_for(origin, "file.bin"))

    assert_cached_correctly(cache, data, cached)
    ranges = [record.range for record in origin.requests("/file.bin")]
    assert f"bytes={size // 2}-{size - 1}" in ranges
    # Nothing was sent twice except the one-byte probe.
    assert origin.bytes_sent("/file.bin") == size + 1


def test_cut_without_ranges_starts_over(origin, cache):
    size = 2 * MIB
    data = put_file(origin, "file.bin", size)
    origin.disable_ranges("/file.bin")
    origin.cut("/file.bin", at=size // 2)

    cached = run_ingest(cache, request_for(origin, "file.bin"))

    assert_cached_correctly(cache, data, cached)
    assert origin.bytes_sent("/file.bin") == size + size // 2


def test_parallel_ranges(origin, cache):
    size = 6 * MIB + 5
    data = put_file(origin, "big.bin", size)
    # Slow responses overlap in time, so the origin records the parallel requests.
    origin.throttle("/big.bin", 8 * MIB)
    options = FetchOptions(parallel_ranges=4, segment_size=1 * MIB, hash_buffer=4 * MIB)

    cached = run_ingest(cache, request_for(origin, "big.bin"), options)

    assert_cached_correctly(cache, data, cached)
    assert origin.max_concurrent("/big.bin") >= 2
    ranges = sorted(
        tuple(int(part) for part in record.range.removeprefix("bytes=").split("-"))
        for record in origin.requests("/big.bin")
        if record.range != "bytes=0-0"
    )
    # Contiguous, piece-aligned ranges that cover the file exactly once.
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size - 1
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        assert start == end + 1
        assert start % cached.metainfo.piece_length == 0
    assert origin.bytes_sent("/big.bin") == size + 1


def test_segment_cut_in_parallel_ranges(origin, cache):
    size = 4 * MIB
    data = put_file(origin, "big.bin", size)
    origin.cut("/big.bin", at=size - 100 * KIB, times=2)
    options = FetchOptions(parallel_ranges=3, segment_size=1 * MIB, attempts=3, retry_max_delay=1)

    cached = run_ingest(cache, request_for(origin, "big.bin"), options)

    assert_cached_correctly(cache, data, cached)
    assert origin.bytes_sent("/big.bin") == size + 1


def test_requested_piece_length(origin, cache):
    data = put_file(origin, "file.bin", 1 * MIB + 1)

    cached = run_ingest(cache, request_for(origin, "file.bin", piece_length=32 * KIB))

    assert_cached_correctly(cache, data, cached)
    assert cached.metainfo.piece_length == 32 * KIB


@pytest.mark.parametrize("piece_length", [1000, 8 * KIB, 128 * MIB])
def test_invalid_piece_length(origin, cache, piece_length):
    put_file(origin, "file.bin", 10)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "file.bin", piece_length=piece_length))

    assert str(raised.value).startswith(f"invalid piece_length {piece_length}: expected a power of two")
    assert origin.requests("/file.bin") == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file.bin", "file:///etc/passwd", "not a url"])
def test_invalid_url(cache, url, origin):
    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "x", url=url))

    assert raised.value.cause == FailureCause.INVALID_REQUEST
    assert "expected an http:// or https:// URL" in str(raised.value)


def test_unreachable_origin(cache, origin):
    # A port on loopback that nothing listens on: the connection is refused.
    from tests.support.processes import free_port

    url = f"http://127.0.0.1:{free_port()}/file.bin"
    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "x", url=url))

    assert raised.value.cause == FailureCause.ORIGIN_UNREACHABLE
    assert str(raised.value).startswith(f"origin {url} failed after 3 attempts: ConnectError")
    assert_nothing_cached(cache)


def test_cached_digest_is_not_fetched_again(origin, cache):
    data = put_file(origin, "file.bin", 500 * KIB)
    digest = f"sha256:{sha256_of(data)}"
    first = run_ingest(cache, request_for(origin, "file.bin", digest=digest))
    sent = origin.bytes_sent("/file.bin")

    again = run_ingest(cache, request_for(origin, "file.bin", digest=digest))

    assert again.sha256 == first.sha256
    assert origin.bytes_sent("/file.bin") == sent


def test_cached_url_task_is_not_fetched_again(origin, cache):
    put_file(origin, "file.bin", 500 * KIB)
    first = run_ingest(cache, request_for(origin, "file.bin"))
    sent = origin.bytes_sent("/file.bin")

    again = run_ingest(cache, request_for(origin, "file.bin"))

    assert again.metainfo.info_hash == first.metainfo.info_hash
    assert origin.bytes_sent("/file.bin") == sent


def test_quota_rejects_a_file_larger_than_it(origin, tmp_path):
    cache = Cache(tmp_path / "data", quota=100 * KIB)
    put_file(origin, "file.bin", 200 * KIB)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "file.bin"))

    assert str(raised.value) == (
        f"the content has {200 * KIB} bytes, more than the seeder's cache_quota of {100 * KIB} bytes"
    )
    assert raised.value.cause == FailureCause.TOO_LARGE
    # The size came with the probe, so the body was never downloaded.
    assert origin.bytes_sent("/file.bin") == 1
    assert_nothing_cached(cache)


def test_quota_evicts_least_recently_used(origin, tmp_path):
    cache = Cache(tmp_path / "data", quota=1 * MIB)
    for name in ("a.bin", "b.bin", "c.bin"):
        put_file(origin, name, 400 * KIB)
    a = run_ingest(cache, request_for(origin, "a.bin"))
    b = run_ingest(cache, request_for(origin, "b.bin"))
    time.sleep(0.01)
    cache.touch(a.sha256)

    c = run_ingest(cache, request_for(origin, "c.bin"))

    assert cache.get(b.sha256) is None
    assert not b.path.exists()
    assert cache.get(a.sha256) is not None
    assert cache.get(c.sha256) is not None
    assert cache.used_bytes() == 800 * KIB


def test_quota_keeps_files_in_use(origin, tmp_path):
    cache = Cache(tmp_path / "data", quota=1 * MIB, in_use=lambda cached: True)
    for name in ("a.bin", "b.bin", "c.bin"):
        put_file(origin, name, 400 * KIB)
    run_ingest(cache, request_for(origin, "a.bin"))
    run_ingest(cache, request_for(origin, "b.bin"))

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "c.bin"))

    assert str(raised.value).startswith(f"the cache has no room for {400 * KIB} bytes")
    assert len(cache.files()) == 2


def test_restart_keeps_the_cache_and_empties_tmp(origin, tmp_path):
    cache = Cache(tmp_path / "data", quota=0)
    data = put_file(origin, "file.bin", 300 * KIB)
    cached = run_ingest(cache, request_for(origin, "file.bin"))
    (cache.tmp / "ingest-left-by-a-crash.part").write_bytes(b"partial")
    (cache.blobs / ("f" * 64)).write_bytes(b"a file without its torrent")

    reopened = Cache(tmp_path / "data", quota=0)

    assert [file.sha256 for file in reopened.files()] == [cached.sha256]
    assert reopened.get(cached.sha256).path.read_bytes() == data
    assert reopened.task_content("url:file.bin") == cached.sha256
    assert list(reopened.tmp.iterdir()) == []
    assert not (reopened.blobs / ("f" * 64)).exists()


def test_cancel_stops_the_download(origin, cache):
    import threading

    from seeder.ingest import Ingest

    put_file(origin, "slow.bin", 4 * MIB)
    origin.throttle("/slow.bin", 512 * KIB)
    ingest = Ingest(request_for(origin, "slow.bin"), cache, FAST_RETRIES)
    errors = []

    def run():
        try:
            ingest.run()
        except IngestError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    ingest.cancel()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert [error.cause for error in errors] == [FailureCause.CANCELLED]
    assert_nothing_cached(cache)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, mounted for the test and unmounted after it."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize("size_known", [True, False], ids=["size-known", "no-content-length"])
def test_full_disk_fails_the_ingest(origin, small_disk, size_known):
    cache = Cache(small_disk / "data", quota=0)
    put_file(origin, "big.bin", 4 * MIB)
    if not size_known:
        origin.omit_content_length("/big.bin")
        origin.disable_ranges("/big.bin")

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "big.bin"))

    assert raised.value.cause == FailureCause.DISK
    assert "no space left on device" in str(raised.value)
    assert_nothing_cached(cache)
    if size_known:
        # The space was reserved before the body was requested.
        assert origin.bytes_sent("/big.bin") == 1


def test_origin_that_always_cuts_without_ranges(origin, cache):
    size = 1 * MIB
    put_file(origin, "file.bin", size)
    origin.disable_ranges("/file.bin")
    origin.cut("/file.bin", at=size // 2, times=100)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "file.bin"))

    assert raised.value.cause == FailureCause.ORIGIN_UNREACHABLE
    assert "gave up after 3 attempts" in str(raised.value)
    assert origin.bytes_sent("/file.bin") == 3 * (size // 2)
    assert_nothing_cached(cache)


def test_error_messages_hide_the_query_string(origin, cache):
    url = origin.url("/missing.bin", signed=True)

    with pytest.raises(IngestError) as raised:
        run_ingest(cache, request_for(origin, "missing.bin", url=url))

    assert str(raised.value) == f"origin returned 404 for {origin.url('/missing.bin')}?..."
    assert "Signature" not in str(raised.value)


def test_read_timeout_resumes_with_range(origin, cache):
    size = 256 * KIB
    data = put_file(origin, "stalling.bin", size)
    # One 64 KiB chunk, then a pause of 4 s: longer than the read timeout.
    origin.throttle("/stalling.bin", 16 * KIB)
    options = FetchOptions(read_timeout=0.5, attempts=3, retry_max_delay=0.5)

    cached = run_ingest(cache, request_for(origin, "stalling.bin"), options)

    assert_cached_correctly(cache, data, cached)
    starts = [
        int(record.range.removeprefix("bytes=").split("-")[0])
        for record in origin.requests("/stalling.bin")
        if record.range != "bytes=0-0"
    ]
    assert starts == [0, 64 * KIB, 128 * KIB, 192 * KIB]
