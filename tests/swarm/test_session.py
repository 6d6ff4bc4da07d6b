"""Two real libtorrent sessions on loopback, joined directly with no tracker."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from swarm import SEEDER_PEER_ID_PREFIX, InvalidMetainfo, Session, SwarmSettings
from tests.support.torrents import make_torrent, write_random_file

# No tracker listens here: the sessions are connected by hand.
UNUSED_ANNOUNCE = "http://127.0.0.1:9/announce"


@pytest.fixture
def seeder_and_leecher(tmp_path: Path):
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    source = seed_dir / "blob"
    digest = write_random_file(source, 6 * 1024 * 1024 + 123)
    metainfo = make_torrent(source, UNUSED_ANNOUNCE)

    seeder = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX))
    leecher = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    seeder.add_task(metainfo, seed_dir, seed_mode=True)
    yield seeder, leecher, metainfo, digest, tmp_path / "leech"
    leecher.close()
    seeder.close()


def connect(task, session: Session) -> None:
    task._handle.connect_peer(("127.0.0.1", session.listen_port))


def test_download_completes_and_matches(seeder_and_leecher):
    seeder, leecher, metainfo, digest, save_path = seeder_and_leecher
    task = leecher.add_task(metainfo, save_path)
    connect(task, seeder)

    task.wait_complete(timeout=60)

    assert hashlib.sha256(task.path.read_bytes()).hexdigest() == digest
    progress = task.progress()
    assert progress.complete
    assert progress.bytes_done == task.size
    assert progress.bytes_from_seeder == task.size
    assert progress.bytes_from_peers == 0


def test_stream_yields_bytes_in_order(seeder_and_leecher):
    seeder, leecher, metainfo, digest, save_path = seeder_and_leecher
    task = leecher.add_task(metainfo, save_path)
    connect(task, seeder)

    streamed = hashlib.sha256()
    for chunk in task.stream(stall_timeout=30):
        streamed.update(chunk)

    assert streamed.hexdigest() == digest


def test_stream_range_inside_pieces(seeder_and_leecher):
    seeder, leecher, metainfo, digest, save_path = seeder_and_leecher
    task = leecher.add_task(metainfo, save_path)
    connect(task, seeder)
    start, end = 300_000, 1_000_001

    data = b"".join(task.stream(start, end, stall_timeout=30))

    expected = (save_path.parent / "seed" / "blob").read_bytes()[start:end]
    assert data == expected


def test_stream_times_out_without_peers(tmp_path: Path):
    source = tmp_path / "blob"
    write_random_file(source, 512 * 1024)
    metainfo = make_torrent(source, UNUSED_ANNOUNCE)
    session = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    try:
        task = session.add_task(metainfo, tmp_path / "empty")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="piece 0 did not arrive"):
            b"".join(task.stream(stall_timeout=1))
        assert time.monotonic() - started < 10
    finally:
        session.close()


def test_add_same_task_twice_returns_one(seeder_and_leecher):
    _, leecher, metainfo, _, save_path = seeder_and_leecher
    assert leecher.add_task(metainfo, save_path) is leecher.add_task(metainfo, save_path)
    assert len(leecher.tasks()) == 1


@pytest.mark.parametrize("metainfo", [b"", b"not bencode", b"d4:infod4:name1:xee"])
def test_invalid_metainfo_rejected(tmp_path: Path, metainfo: bytes):
    session = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    try:
        with pytest.raises(InvalidMetainfo, match="invalid metainfo"):
            session.add_task(metainfo, tmp_path)
    finally:
        session.close()


def corrupt_every_piece(path: Path, piece_length: int) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as file:
        for offset in range(0, size, piece_length):
            file.seek(offset + 10)
            file.write(b"\xff" * 64)


def test_corrupt_peer_rejected_on_hash_check(tmp_path: Path):
    """A peer whose file changed after it finished sends pieces that fail the hash check."""
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    source = good_dir / "blob"
    digest = write_random_file(source, 4 * 1024 * 1024)
    metainfo = make_torrent(source, UNUSED_ANNOUNCE)
    shutil.copy(source, bad_dir / "blob")

    bad = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    good = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX))
    leecher = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    try:
        # The bad peer checks its data as complete first, so it believes it has
        # every piece; only then does its file change underneath it.
        bad_task = bad.add_task(metainfo, bad_dir)
        bad_task.wait_complete(timeout=30)
        corrupt_every_piece(bad_dir / "blob", bad_task.piece_length)
        good.add_task(metainfo, good_dir, seed_mode=True)

        task = leecher.add_task(metainfo, tmp_path / "leech")
        connect(task, bad)
        deadline = time.monotonic() + 20
        while task.progress().hash_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        connect(task, good)

        task.wait_complete(timeout=60)

        assert hashlib.sha256(task.path.read_bytes()).hexdigest() == digest
        assert task.progress().hash_failures > 0
    finally:
        for session in (leecher, good, bad):
            session.close()
