"""Host and task rate limits between real libtorrent sessions on 127.0.0.1.

libtorrent would put 127.0.0.1 in its local peer class, which has no rate
limits; the host limits below hold only because swarm puts every address in
the global peer class. Unlimited, these sessions move hundreds of MB/s.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import libtorrent as lt
import pytest

from core.host_config import HostConfig
from swarm import SEEDER_PEER_ID_PREFIX, Session, SwarmSettings
from tests.support.rates import MB, connect, measure, payload_downloaded, payload_uploaded
from tests.support.torrents import make_torrent, write_random_file

# Each rate test moves about 50 MB between the sessions.
pytestmark = pytest.mark.slow

# No tracker listens here: the sessions are connected by hand.
UNUSED_ANNOUNCE = "http://127.0.0.1:9/announce"

LIMIT = 4 * MB

# Seconds before the window opens (connection, first requests, the first
# burst of banked quota) and seconds of the window itself.
WARM_UP = 3.0
WINDOW = 12.0

# Enough bytes that no download ends inside the window, bursts included.
BLOB_SIZE = 96 * 1024 * 1024

# A limit holds when the steady-state rate is at most 10% above it. The
# floor only shows that the transfer ran; the benchmark reports how close
# to the limit it gets.
CEILING = 1.10
FLOOR = 0.70


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> list[tuple[bytes, Path]]:
    """Two seeded blobs: (metainfo, directory holding the file)."""
    made = []
    for name in ("a.bin", "b.bin"):
        directory = tmp_path_factory.mktemp("seed")
        write_random_file(directory / name, BLOB_SIZE)
        made.append((make_torrent(directory / name, UNUSED_ANNOUNCE, piece_length=1024 * 1024), directory))
    return made


@pytest.fixture
def sessions(tmp_path: Path):
    """Start a seeding session and a downloading session with the given host configurations."""
    started: list[Session] = []

    def start(seeder: HostConfig, leecher: HostConfig) -> tuple[Session, Session]:
        seeding = Session(
            SwarmSettings(
                listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX, **seeder.session_limits()
            )
        )
        started.append(seeding)
        downloading = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", **leecher.session_limits()))
        started.append(downloading)
        return seeding, downloading

    yield start
    for session in reversed(started):
        session.close()
    shutil.rmtree(tmp_path / "leech", ignore_errors=True)


def transfer(seeding: Session, downloading: Session, seeder: HostConfig, leecher: HostConfig, blob, save_path: Path):
    """Seed `blob` and download it, each task under its host's per-task limits; return both tasks."""
    metainfo, directory = blob
    upload, download = seeder.task_limits()
    sent = seeding.add_task(metainfo, directory, seed_mode=True, upload_limit=upload, download_limit=download)
    upload, download = leecher.task_limits()
    received = downloading.add_task(metainfo, save_path, upload_limit=upload, download_limit=download)
    connect(received, seeding.listen_port)
    return sent, received


@pytest.mark.parametrize(
    "config",
    [HostConfig(download_limit=LIMIT), HostConfig(task_download_limit=LIMIT)],
    ids=["host", "task"],
)
def test_download_limit_holds(blobs, sessions, tmp_path: Path, config: HostConfig):
    seeding, downloading = sessions(HostConfig(), config)
    _, received = transfer(seeding, downloading, HostConfig(), config, blobs[0], tmp_path / "leech")

    [window] = measure([lambda: payload_downloaded(received)], WARM_UP, WINDOW)

    assert window.rate <= CEILING * LIMIT, f"{window.rate / MB:.2f} MB/s under a {LIMIT / MB:.0f} MB/s limit"
    assert window.rate >= FLOOR * LIMIT, f"only {window.rate / MB:.2f} MB/s: the transfer stalled"


@pytest.mark.parametrize(
    "config",
    [HostConfig(upload_limit=LIMIT), HostConfig(task_upload_limit=LIMIT)],
    ids=["host", "task"],
)
def test_upload_limit_holds(blobs, sessions, tmp_path: Path, config: HostConfig):
    seeding, downloading = sessions(config, HostConfig())
    sent, _ = transfer(seeding, downloading, config, HostConfig(), blobs[0], tmp_path / "leech")

    [window] = measure([lambda: payload_uploaded(sent)], WARM_UP, WINDOW)

    assert window.rate <= CEILING * LIMIT, f"{window.rate / MB:.2f} MB/s under a {LIMIT / MB:.0f} MB/s limit"
    assert window.rate >= FLOOR * LIMIT, f"only {window.rate / MB:.2f} MB/s: the transfer stalled"


def test_two_tasks_share_host_download_limit(blobs, sessions, tmp_path: Path):
    host = HostConfig(download_limit=LIMIT)
    seeding, downloading = sessions(HostConfig(), host)
    _, first = transfer(seeding, downloading, HostConfig(), host, blobs[0], tmp_path / "leech" / "a")
    _, second = transfer(seeding, downloading, HostConfig(), host, blobs[1], tmp_path / "leech" / "b")

    windows = measure([lambda: payload_downloaded(first), lambda: payload_downloaded(second)], WARM_UP, WINDOW)

    total = sum(window.rate for window in windows)
    assert total <= CEILING * LIMIT, f"{total / MB:.2f} MB/s together under a {LIMIT / MB:.0f} MB/s host limit"
    assert total >= FLOOR * LIMIT, f"only {total / MB:.2f} MB/s together: the transfers stalled"
    for window in windows:
        # Each task gets a real share, not the whole limit while the other waits.
        assert window.rate >= 0.2 * LIMIT, f"one task got only {window.rate / MB:.2f} MB/s"


def test_task_limit_below_host_limit_wins(blobs, sessions, tmp_path: Path):
    task_limit = 2 * MB
    host = HostConfig(download_limit=LIMIT, task_download_limit=task_limit)
    seeding, downloading = sessions(HostConfig(), host)
    _, limited = transfer(seeding, downloading, HostConfig(), host, blobs[0], tmp_path / "leech")

    [window] = measure([lambda: payload_downloaded(limited)], WARM_UP, WINDOW)

    assert window.rate <= CEILING * task_limit, f"{window.rate / MB:.2f} MB/s under a 2 MB/s task limit"
    assert window.rate >= FLOOR * task_limit, f"only {window.rate / MB:.2f} MB/s: the transfer stalled"


def test_requested_task_limit_only_lowers_host_limit():
    host = HostConfig(task_upload_limit=3 * MB, task_download_limit=0)

    assert host.task_limits(upload=5 * MB, download=2 * MB) == (3 * MB, 2 * MB)
    assert host.task_limits(upload=1 * MB) == (1 * MB, 0)
    assert host.task_limits() == (3 * MB, 0)


def test_loopback_exempt_without_peer_class_filter(blobs, sessions, tmp_path: Path):
    """Control for the tests above: with libtorrent's own rule for 127/8, a host limit does not hold."""
    host = HostConfig(download_limit=LIMIT)
    seeding, downloading = sessions(HostConfig(), host)
    # libtorrent's default filter puts 127/8 in its local peer class, which has no rate limits.
    libtorrent_default = lt.ip_filter()
    libtorrent_default.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    libtorrent_default.add_rule("127.0.0.0", "127.255.255.255", 1 << lt.session.local_peer_class_id)
    downloading._session.set_peer_class_filter(libtorrent_default)
    _, received = transfer(seeding, downloading, HostConfig(), host, blobs[0], tmp_path / "leech")

    # Under the limit the blob would take about 25 s; unlimited it takes about a second.
    started = time.monotonic()
    received.wait_complete(timeout=BLOB_SIZE / (2 * LIMIT))

    assert time.monotonic() - started < BLOB_SIZE / (2 * LIMIT)
