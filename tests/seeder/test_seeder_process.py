"""`p2p-seeder` as a real process beside a real `p2p-tracker`, with real libtorrent downloaders."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from core.tasks import IngestRequest
from seeder.pieces import MIB
from swarm import Session, SwarmSettings
from tests.support.origin import Origin
from tests.support.processes import VENV_BIN, free_port, running

# Seconds a downloader may take for a few MiB on loopback, with margin for a slow machine.
DOWNLOAD_TIMEOUT = 60


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true, for at most `timeout` seconds; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    root = tmp_path / "origin"
    root.mkdir()
    with Origin(root) as server:
        yield server


@contextmanager
def run_tracker(data_dir: Path, log_path: Path, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    env = {"P2P_TRACKER_DISPATCH_INTERVAL": "0.5", "P2P_TRACKER_MIN_ANNOUNCE_INTERVAL": "1"}
    with running(args, ready_url=f"{url}/healthz", log_path=log_path, env=env):
        yield url


@contextmanager
def run_seeder(
    tracker_url: str, data_dir: Path, log_path: Path, ready=None, **settings: str
) -> Iterator[str]:
    """Run `p2p-seeder` until the tracker lists it (or `ready()` is true); `settings` become P2P_SEEDER_* variables."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(VENV_BIN / "p2p-seeder"),
        "--listen", f"127.0.0.1:{port}",
        "--tracker", tracker_url,
        "--data-dir", str(data_dir),
    ]
    env = {"P2P_SEEDER_HEARTBEAT_INTERVAL": "0.5", **{f"P2P_SEEDER_{k.upper()}": v for k, v in settings.items()}}
    with running(args, ready_url=f"{url}/healthz", log_path=log_path, env=env):
        # The tracker dispatches only to seeders it heard from.
        assert wait_until(ready or (lambda: seeder_ids(tracker_url)), timeout=10), "the seeder sent no heartbeat"
        yield url


def seeders(tracker_url: str) -> list[dict]:
    return httpx.get(f"{tracker_url}/api/v1/seeders").json()


def seeder_ids(tracker_url: str) -> list[str]:
    return [seeder["id"] for seeder in seeders(tracker_url)]


def request_task(tracker_url: str, url: str, **fields) -> dict:
    response = httpx.post(f"{tracker_url}/api/v1/tasks?wait=30", json={"url": url, **fields}, timeout=40)
    assert response.status_code == 200, response.text
    return response.json()


def download(tracker_url: str, task: dict, directory: Path) -> bytes:
    """Fetch a ready task's metainfo and download it with a fresh libtorrent session."""
    metainfo = httpx.get(f"{tracker_url}/api/v1/tasks/{task['id']}/metainfo").content
    session = Session(SwarmSettings(listen_interfaces="127.0.0.1:0"))
    try:
        handle = session.add_task(metainfo, directory)
        handle.wait_complete(DOWNLOAD_TIMEOUT)
        return handle.path.read_bytes()
    finally:
        session.close()


def put_file(origin: Origin, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (origin.root / name).write_bytes(data)
    return data


def blobs(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "blobs" / "sha256").iterdir())


def test_ingest_and_seed(origin, tmp_path):
    data = put_file(origin, "file.bin", 3 * MIB + 7)
    sha256 = hashlib.sha256(data).hexdigest()

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
        task = request_task(tracker, origin.url("/file.bin"))

        assert task["state"] == "ready", task
        assert task["size"] == len(data)
        assert download(tracker, task, tmp_path / "peer") == data

    assert blobs(tmp_path / "seeder") == [sha256, f"{sha256}.torrent"]
    assert origin.bytes_sent("/file.bin") == len(data) + 1


def test_origin_404_fails_the_task(origin, tmp_path):
    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
        task = request_task(tracker, origin.url("/missing.bin"))

    assert task["state"] == "failed"
    assert task["error"] == f"origin returned 404 for {origin.url('/missing.bin')}"
    assert blobs(tmp_path / "seeder") == []
    assert list((tmp_path / "seeder" / "tmp").iterdir()) == []


def test_wrong_digest_fails_the_task(origin, tmp_path):
    data = put_file(origin, "file.bin", 100_000)
    wrong = "sha256:" + "ab" * 32

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
        task = request_task(tracker, origin.url("/file.bin"), digest=wrong)

    assert task["state"] == "failed"
    assert task["error"].startswith(
        f"digest mismatch: expected {wrong}, got sha256:{hashlib.sha256(data).hexdigest()}"
    )
    assert blobs(tmp_path / "seeder") == []


def test_duplicate_ingests_start_one_download(origin, tmp_path):
    data = put_file(origin, "slow.bin", 2 * MIB)
    origin.throttle("/slow.bin", 1 * MIB)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log") as seeder:
        pending = httpx.post(f"{tracker}/api/v1/tasks", json={"url": origin.url("/slow.bin")}).json()
        assert wait_until(lambda: origin.requests("/slow.bin"), timeout=10)
        request = IngestRequest(
            task_id=pending["id"], url=origin.url("/slow.bin"), announce_url=f"{tracker}/announce"
        ).model_dump()

        during = httpx.post(f"{seeder}/api/v1/ingest", json=request)
        task = httpx.get(f"{tracker}/api/v1/tasks/{pending['id']}?wait=30", timeout=40).json()
        after = httpx.post(f"{seeder}/api/v1/ingest", json=request)
        registered_again = wait_until(
            lambda: "ingests_total{result=\"cached\"} 1.0" in httpx.get(f"{seeder}/metrics").text, timeout=10
        )

    assert during.status_code == 202
    assert during.json()["status"] == "ingesting"
    assert task["state"] == "ready"
    assert after.status_code == 202
    assert after.json()["status"] == "cached"
    assert registered_again
    probes = [record for record in origin.requests("/slow.bin") if record.range == "bytes=0-0"]
    assert len(probes) == 1
    assert origin.bytes_sent("/slow.bin") == len(data) + 1


def test_restart_seeds_from_cache(origin, tmp_path):
    data = put_file(origin, "file.bin", 2 * MIB + 1)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker:
        with run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
            task = request_task(tracker, origin.url("/file.bin"))
            first_ids = seeder_ids(tracker)
        sent = origin.bytes_sent("/file.bin")

        with run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder-2.log"):
            restarted_ids = seeder_ids(tracker)
            downloaded = download(tracker, task, tmp_path / "peer")

    assert task["state"] == "ready"
    assert restarted_ids == first_ids
    assert downloaded == data
    assert origin.bytes_sent("/file.bin") == sent


def test_new_tracker_gets_the_metainfo_from_cache(origin, tmp_path):
    data = put_file(origin, "file.bin", 1 * MIB)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
        first = request_task(tracker, origin.url("/file.bin"))
    sent = origin.bytes_sent("/file.bin")

    # A tracker that lost its database sends the ingest request again, and the
    # seeder registers the metainfo from its cache.
    with run_tracker(tmp_path / "tracker-2", tmp_path / "tracker-2.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder-2.log"):
        second = request_task(tracker, origin.url("/file.bin"))
        downloaded = download(tracker, second, tmp_path / "peer")

    assert second["state"] == "ready"
    assert second["info_hash"] == first["info_hash"]
    assert downloaded == data
    assert origin.bytes_sent("/file.bin") == sent


def test_metrics_and_health(origin, tmp_path):
    data = put_file(origin, "file.bin", 500_000)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log") as seeder:
        request_task(tracker, origin.url("/file.bin"))
        request_task(tracker, origin.url("/missing.bin"))
        metrics = httpx.get(f"{seeder}/metrics").text
        health = httpx.get(f"{seeder}/healthz").json()

    assert f"p2p_seeder_origin_bytes_total {float(len(data) + 1)}" in metrics
    assert 'p2p_seeder_ingests_total{result="ready"} 1.0' in metrics
    assert 'p2p_seeder_ingests_total{result="failed_origin_status"} 1.0' in metrics
    assert f"p2p_seeder_cache_bytes {float(len(data))}" in metrics
    assert "p2p_seeder_tasks_seeded 1.0" in metrics
    assert health["status"] == "ok"
    assert health["seeder_id"].startswith("seeder-")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"task_id": "x", "url": "http://127.0.0.1/"}', b"[1, 2]"],
    ids=["not-json", "empty", "no-announce-url", "list"],
)
def test_malformed_ingest_request(tmp_path, body):
    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log") as seeder:
        response = httpx.post(
            f"{seeder}/api/v1/ingest", content=body, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 422


def test_heartbeat_describes_the_seeder(tmp_path):
    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log") as seeder:
        [entry] = seeders(tracker)
        host, _, port = entry["peer_address"].rpartition(":")
        # The peer address is where the BitTorrent session accepts connections.
        with socket.create_connection((host, int(port)), timeout=5):
            pass

    assert entry["api_url"] == seeder
    assert host == "127.0.0.1"
    assert entry["id"] == (tmp_path / "seeder" / "seeder_id").read_text().strip()


def test_bittorrent_listen_setting(tmp_path):
    port = free_port()

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log", bittorrent_listen=f"127.0.0.1:{port}"):
        [entry] = seeders(tracker)

    assert entry["peer_address"] == f"127.0.0.1:{port}"


def test_sigterm_during_ingest_leaves_nothing(origin, tmp_path):
    put_file(origin, "slow.bin", 8 * MIB)
    origin.throttle("/slow.bin", 1 * MIB)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker:
        with run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
            task = httpx.post(f"{tracker}/api/v1/tasks", json={"url": origin.url("/slow.bin")}).json()
            assert wait_until(lambda: len(origin.requests("/slow.bin")) > 1, timeout=10)
            stopped_at = time.monotonic()
        # Leaving the block sent SIGTERM and waited for the exit.
        stop_seconds = time.monotonic() - stopped_at
        state = httpx.get(f"{tracker}/api/v1/tasks/{task['id']}").json()["state"]

    # The download is cancelled at its next chunk, not waited for (8 MiB at 1 MiB/s).
    assert stop_seconds < 5
    # A cancelled ingest is not a failed task: the tracker dispatches it again.
    assert state == "ingesting"
    assert blobs(tmp_path / "seeder") == []
    assert list((tmp_path / "seeder" / "tmp").iterdir()) == []


def test_tracker_token(origin, tmp_path, monkeypatch):
    data = put_file(origin, "file.bin", 300_000)
    monkeypatch.setenv("P2P_TRACKER_API_TOKEN", "s3cret-token")

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker:
        client = httpx.Client(headers={"Authorization": "Bearer s3cret-token"})
        with run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log", tracker_token="s3cret-token",
                        ready=lambda: client.get(f"{tracker}/api/v1/seeders").json()):
            task = client.post(f"{tracker}/api/v1/tasks?wait=30", json={"url": origin.url("/file.bin")}, timeout=40).json()

    assert task["state"] == "ready"
    assert task["size"] == len(data)
    log = (tmp_path / "seeder.log").read_text()
    assert "s3cret-token" not in log
    assert "'tracker_token': '***'" in log


def test_quota_evicts_and_stops_seeding(origin, tmp_path):
    put_file(origin, "first.bin", 600_000)
    second = put_file(origin, "second.bin", 600_000)

    with run_tracker(tmp_path / "tracker", tmp_path / "tracker.log") as tracker, \
            run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log", cache_quota="1MiB") as seeder:
        first_task = request_task(tracker, origin.url("/first.bin"))
        second_task = request_task(tracker, origin.url("/second.bin"))
        metrics = httpx.get(f"{seeder}/metrics").text

    assert first_task["state"] == "ready"
    assert second_task["state"] == "ready"
    second_sha256 = hashlib.sha256(second).hexdigest()
    assert blobs(tmp_path / "seeder") == [second_sha256, f"{second_sha256}.torrent"]
    assert "p2p_seeder_tasks_seeded 1.0" in metrics
    assert "p2p_seeder_cache_bytes 600000.0" in metrics


def test_tracker_restarted_empty_on_same_address(origin, tmp_path):
    data = put_file(origin, "file.bin", 1 * MIB)
    port = free_port()
    first_tracker = ExitStack()
    tracker = first_tracker.enter_context(run_tracker(tmp_path / "tracker", tmp_path / "tracker.log", port))

    with run_seeder(tracker, tmp_path / "seeder", tmp_path / "seeder.log"):
        first = request_task(tracker, origin.url("/file.bin"))
        sent = origin.bytes_sent("/file.bin")
        first_tracker.close()

        # The same tracker address with an empty database: the seeder's
        # announces of its cached task fail until the task is registered again.
        with run_tracker(tmp_path / "tracker-2", tmp_path / "tracker-2.log", port):
            assert wait_until(lambda: seeder_ids(tracker), timeout=10)
            second = request_task(tracker, origin.url("/file.bin"))
            started = time.monotonic()
            downloaded = download(tracker, second, tmp_path / "peer")
            seconds = time.monotonic() - started

    assert second["info_hash"] == first["info_hash"]
    assert downloaded == data
    assert origin.bytes_sent("/file.bin") == sent
    # Without a new announce at the registration, libtorrent's retry after
    # the failed announces would keep the downloader without a peer longer.
    assert seconds < 10
