"""Real BitTorrent clients that find each other only through the tracker.

Three libtorrent sessions on loopback complete a torrent registered in the
tracker, with DHT, local service discovery and uTP off. Then aria2c, a client
written by others, completes the torrent from them.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libtorrent as lt
import pytest

from tests.support.processes import free_port
from tests.support.torrents import make_torrent, write_random_file
from tests.tracker.conftest import Tracker, start_tracker, write_config

CONTENT_SIZE = 8 * 1024 * 1024 + 4321
PIECE_LENGTH = 256 * 1024


def make_session(peer_prefix: str) -> lt.session:
    """Return a libtorrent session that can learn of peers only from a tracker."""
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # uTP collapses to a few MB/s on loopback, so the peers use TCP.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Every peer here has the address 127.0.0.1.
        "allow_multiple_connections_per_ip": True,
        "peer_fingerprint": peer_prefix,
        "alert_mask": lt.alert_category.error | lt.alert_category.tracker | lt.alert_category.status,
    }
    return lt.session(settings)


def add_torrent(session: lt.session, metainfo: bytes, save_path: Path, announce_url: str) -> lt.torrent_handle:
    # The host's location label rides on the announce URL, as p2p-fetch hosts
    # send it. The announce URL is outside the info dictionary, so replacing
    # it leaves the info hash alone.
    torrent = lt.bdecode(metainfo)
    torrent[b"announce"] = announce_url.encode()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = str(save_path)
    return session.add_torrent(params)


def wait_all_seeding(handles: list[lt.torrent_handle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(handle.status().is_seeding for handle in handles):
            return
        time.sleep(0.2)
    states = [(handle.status().progress, str(handle.status().state)) for handle in handles]
    raise TimeoutError(f"not all sessions completed within {timeout} s: {states}")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tracker, bytes, Path, str, bytes]]:
    """A tracker and three libtorrent sessions that all completed one registered torrent."""
    tmp_path = tmp_path_factory.mktemp("swarm")
    config = write_config(tmp_path / "tracker.toml", announce_interval=5, min_announce_interval=1)
    with start_tracker(tmp_path, "--config", str(config)) as tracker:
        seed_dir = tmp_path / "seed"
        seed_dir.mkdir()
        digest = write_random_file(seed_dir / "content.bin", CONTENT_SIZE)
        metainfo = make_torrent(seed_dir / "content.bin", f"{tracker.url}/announce", PIECE_LENGTH)
        task = tracker.register(metainfo)
        info_hash = bytes.fromhex(task["info_hash"])

        sessions = [make_session(f"-LT{number}-") for number in range(3)]
        try:
            handles = [
                add_torrent(sessions[0], metainfo, seed_dir, f"{tracker.url}/announce?location=dc1/rack1"),
                add_torrent(sessions[1], metainfo, tmp_path / "leech1", f"{tracker.url}/announce?location=dc1/rack2"),
                add_torrent(sessions[2], metainfo, tmp_path / "leech2", f"{tracker.url}/announce?location=dc2/rack1"),
            ]
            wait_all_seeding(handles, timeout=90)
            yield tracker, metainfo, tmp_path, digest, info_hash
        finally:
            for session in sessions:
                session.pause()
            del sessions


def test_three_sessions_complete(swarm: tuple[Tracker, bytes, Path, str, bytes]) -> None:
    tracker, _, tmp_path, digest, info_hash = swarm

    for folder in ("leech1", "leech2"):
        data = (tmp_path / folder / "content.bin").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest

    peers = tracker.api("GET", f"/swarms/{info_hash.hex()}").json()["peers"]
    locations = sorted(peer["labels"].get("location", "") for peer in peers)
    assert locations == ["dc1/rack1", "dc1/rack2", "dc2/rack1"], f"peers: {peers}"


def test_scrape_counts_completions(swarm: tuple[Tracker, bytes, Path, str, bytes]) -> None:
    tracker, _, _, _, info_hash = swarm

    # The leechers announce `completed` right after they finish; allow for that request.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        counts = tracker.scrape(info_hash)[b"files"][info_hash]
        if counts[b"complete"] == 3 and counts[b"downloaded"] == 2:
            break
        time.sleep(0.3)

    assert counts == {b"complete": 3, b"downloaded": 2, b"incomplete": 0}


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (Debian package aria2)")
def test_aria2_completes_from_swarm(swarm: tuple[Tracker, bytes, Path, str, bytes]) -> None:
    tracker, metainfo, tmp_path, digest, _ = swarm
    torrent_file = tmp_path / "content.torrent"
    torrent_file.write_bytes(metainfo)
    output = tmp_path / "aria2"

    result = subprocess.run(
        [
            "aria2c", str(torrent_file), f"--dir={output}", f"--listen-port={free_port()}",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--seed-time=0", "--file-allocation=none",
            "--bt-stop-timeout=60", "--summary-interval=0", "--console-log-level=warn",
            "--no-conf=true", "--check-certificate=false", "--disable-ipv6=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, f"aria2c exited with {result.returncode}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    assert hashlib.sha256((output / "content.bin").read_bytes()).hexdigest() == digest
