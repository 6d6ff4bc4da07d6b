"""Blobs through the swarm: a real tracker and seeder, shared downloads, fallbacks and a lying swarm."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from core.tasks import API_PREFIX
from swarm import SEEDER_PEER_ID_PREFIX, Session, SwarmSettings
from tests.mirror.test_clients import registries_conf
from tests.support.cluster import tracker_and_seeder
from tests.support.processes import VENV_BIN, free_port, running
from tests.support.registry import IMAGES, Registry
from tests.support.torrents import make_torrent


def _blob_url(mirror_url: str, image: str, digest: str) -> str:
    repository = IMAGES[image].rpartition(":")[0]
    return f"{mirror_url}/v2/{repository}/blobs/{digest}"


# The seeder opens every ingest with a GET of `Range: bytes=0-0`, one byte
# on top of the blob itself.
_SEEDER_PROBE_BYTES = 1


def _back_to_source(metrics: dict[str, float]) -> float:
    return sum(value for name, value in metrics.items() if name.startswith("p2p_mirror_back_to_source_total"))


@pytest.fixture
def cluster(netns, tmp_path):
    """A tracker and a seeder; the test thread is inside the namespace, so they are too."""
    directory = tmp_path / "cluster"
    directory.mkdir()
    with tracker_and_seeder(directory) as started:
        yield started


@pytest.fixture
def lone_tracker(netns, tmp_path):
    """A tracker without any seeder: tasks stay pending until a test registers their metainfo."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        netns.command([str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "tracker")]),
        ready_url=f"{url}/healthz",
        log_path=tmp_path / "tracker.log",
    ):
        yield url


def test_blob_through_swarm(registry: Registry, cluster, start_mirror):
    mirror = start_mirror({registry.host: registry.url}, cluster.tracker_url)
    digest = registry.layer_digests("big")[-1]
    sent_before = registry.blob_bytes_sent(digest)

    response = httpx.get(_blob_url(mirror.url, "big", digest), timeout=120)

    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    metrics = mirror.metrics()
    assert metrics['p2p_mirror_blobs_served_total{source="swarm"}'] == 1
    assert metrics['p2p_mirror_blob_bytes_served_total{source="swarm"}'] == len(response.content)
    assert _back_to_source(metrics) == 0
    # The seeder fetched the blob in ranges; together they are the blob, once.
    assert registry.blob_bytes_sent(digest) - sent_before == len(response.content) + _SEEDER_PROBE_BYTES


def test_clients_share_one_download(registry: Registry, cluster, start_mirror):
    mirror = start_mirror({registry.host: registry.url}, cluster.tracker_url)
    digest = registry.layer_digests("big")[-1]
    url = _blob_url(mirror.url, "big", digest)
    sent_before = registry.blob_bytes_sent(digest)

    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: httpx.get(url, timeout=120), range(4)))

    for response in bodies:
        assert response.status_code == 200
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    metrics = mirror.metrics()
    assert metrics["p2p_mirror_downloads_started_total"] == 1
    assert registry.blob_bytes_sent(digest) - sent_before == len(bodies[0].content) + _SEEDER_PROBE_BYTES


@pytest.mark.slow
def test_two_mirrors_pull_big_image_at_once(registry: Registry, cluster, netns, start_mirror, tmp_path):
    mirrors = [start_mirror({registry.host: registry.url}, cluster.tracker_url) for _ in range(2)]
    manifest = registry.manifest("big").json()
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    sent_before = {digest: registry.blob_bytes_sent(digest) for digest in digests}
    pulls = []
    for index, mirror in enumerate(mirrors):
        conf = registries_conf(tmp_path / f"registries{index}.conf", registry, mirror.host)
        args = ["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
                f"docker://{registry.host}/{IMAGES['big']}", f"dir:{tmp_path / f'pulled{index}'}"]
        pulls.append(subprocess.Popen(netns.command(args), stderr=subprocess.PIPE, text=True))

    for pull in pulls:
        _, stderr = pull.communicate(timeout=300)
        assert pull.returncode == 0, stderr

    for digest in digests:
        size = registry.blob_size("big", digest)
        assert registry.blob_bytes_sent(digest) - sent_before[digest] == size + _SEEDER_PROBE_BYTES, digest
        for index in range(2):
            pulled = tmp_path / f"pulled{index}" / digest.partition(":")[2]
            assert "sha256:" + hashlib.sha256(pulled.read_bytes()).hexdigest() == digest
    for mirror in mirrors:
        metrics = mirror.metrics()
        assert metrics['p2p_mirror_blobs_served_total{source="swarm"}'] == len(digests)
        assert _back_to_source(metrics) == 0


def test_second_pull_served_from_cache(registry: Registry, cluster, netns, start_mirror, tmp_path):
    mirror = start_mirror({registry.host: registry.url}, cluster.tracker_url)
    conf = registries_conf(tmp_path / "registries.conf", registry, mirror.host)
    manifest = registry.manifest("big").json()
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    source = f"docker://{registry.host}/{IMAGES['big']}"

    for attempt in ("first", "second"):
        run = subprocess.run(
            netns.command(["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
                           source, f"dir:{tmp_path / attempt}"]),
            capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr
        if attempt == "first":
            sent_after_first = {digest: registry.blob_bytes_sent(digest) for digest in digests}

    for digest in digests:
        assert registry.blob_bytes_sent(digest) == sent_after_first[digest], digest
    metrics = mirror.metrics()
    assert metrics["p2p_mirror_downloads_started_total"] == len(digests)
    assert metrics['p2p_mirror_blobs_served_total{source="cache"}'] == len(digests)


def test_tracker_down_falls_back_to_upstream(registry: Registry, netns, start_mirror, tmp_path):
    dead_tracker = f"http://127.0.0.1:{free_port()}"
    mirror = start_mirror({registry.host: registry.url}, dead_tracker)
    conf = registries_conf(tmp_path / "registries.conf", registry, mirror.host)
    layer = registry.layer_digests("oci")[0]

    run = subprocess.run(
        netns.command(["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
                       f"docker://{registry.host}/{IMAGES['oci']}", f"dir:{tmp_path / 'pulled'}"]),
        capture_output=True, text=True, timeout=300,
    )

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "pulled" / layer.partition(":")[2]).is_file()
    metrics = mirror.metrics()
    assert metrics['p2p_mirror_back_to_source_total{reason="tracker_unreachable"}'] == 2
    assert metrics['p2p_mirror_blobs_served_total{source="upstream"}'] == 2
    log = mirror.log()
    assert f"digest={layer}" in log
    assert "reason=tracker_unreachable" in log


def _register_torrent(tracker_url: str, digest: str, blob_url: str, content: bytes, directory: Path) -> bytes:
    """Create the task of `digest` and register a torrent of `content` for it, as a seeder would."""
    directory.mkdir(parents=True)
    path = directory / digest.partition(":")[2]
    path.write_bytes(content)
    metainfo = make_torrent(path, f"{tracker_url}/announce", piece_length=64 * 1024)
    task = httpx.post(f"{tracker_url}{API_PREFIX}/tasks", json={"url": blob_url, "digest": digest})
    assert task.status_code == 200, task.text
    registered = httpx.put(f"{tracker_url}{API_PREFIX}/tasks/{digest}/metainfo", content=metainfo)
    assert registered.status_code == 200, registered.text
    return metainfo


def test_wrong_blob_from_swarm_aborts_response(registry: Registry, lone_tracker, start_mirror, tmp_path):
    mirror = start_mirror({registry.host: registry.url}, lone_tracker)
    digest = registry.layer_digests("oci")[0]
    url = _blob_url(mirror.url, "oci", digest)
    good = httpx.get(_blob_url(registry.url, "oci", digest)).content
    # Same size, one byte changed: every piece hash of the torrent matches,
    # and only the sha256 of the whole blob differs.
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    metainfo = _register_torrent(lone_tracker, digest, _blob_url(registry.url, "oci", digest), bytes(bad), tmp_path / "seed")

    seeder = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX))
    try:
        seeder.add_task(metainfo, tmp_path / "seed", seed_mode=True)

        received = 0
        # The connection closes before Content-Length: an incomplete body.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with httpx.stream("GET", url, timeout=60) as response:
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    received += len(chunk)

        # The mirror cuts the body one byte short, but the client may not see
        # the bytes that arrived together with the close, so only "short" is
        # certain here.
        assert received < len(good)
        metrics = mirror.metrics()
        assert metrics['p2p_mirror_digest_mismatches_total{source="swarm"}'] == 1
        assert metrics['p2p_mirror_blobs_served_total{source="swarm"}'] == 0
        assert not (mirror.data_dir / "blobs" / digest.replace(":", "-")).exists()

        # The next request for that digest skips the swarm that lied.
        retry = httpx.get(url, timeout=60)
        assert retry.status_code == 200
        assert retry.content == good
        assert mirror.metrics()['p2p_mirror_back_to_source_total{reason="digest_mismatch"}'] == 1
    finally:
        seeder.close()


def test_swarm_stall_falls_back_to_upstream(registry: Registry, lone_tracker, start_mirror, tmp_path):
    # The tracker has a torrent of the blob, but no peer seeds it.
    mirror = start_mirror(
        {registry.host: registry.url}, lone_tracker, env={"P2P_MIRROR_SWARM_STALL_TIMEOUT": "2"}
    )
    digest = registry.layer_digests("oci")[0]
    good = httpx.get(_blob_url(registry.url, "oci", digest)).content
    _register_torrent(lone_tracker, digest, _blob_url(registry.url, "oci", digest), good, tmp_path / "seed")

    response = httpx.get(_blob_url(mirror.url, "oci", digest), timeout=60)

    assert response.status_code == 200
    assert response.content == good
    metrics = mirror.metrics()
    assert metrics['p2p_mirror_back_to_source_total{reason="swarm_stall"}'] == 1
    assert metrics['p2p_mirror_blobs_served_total{source="upstream"}'] == 1
    assert "reason=swarm_stall" in mirror.log()


def test_range_requests_through_swarm(registry: Registry, cluster, start_mirror):
    mirror = start_mirror({registry.host: registry.url}, cluster.tracker_url)
    digest = registry.layer_digests("big")[-1]
    url = _blob_url(mirror.url, "big", digest)
    whole = httpx.get(_blob_url(registry.url, "big", digest), timeout=60).content
    size = len(whole)
    resume_at = size - 3_000_000

    # Both ranges are cold: the first request starts the swarm download.
    with ThreadPoolExecutor(2) as pool:
        middle, tail = pool.map(
            lambda header: httpx.get(url, headers={"Range": header}, timeout=120),
            ["bytes=100-199", f"bytes={resume_at}-"],
        )

    assert middle.status_code == tail.status_code == 206
    assert middle.content == whole[100:200]
    assert middle.headers["Content-Range"] == f"bytes 100-199/{size}"
    assert tail.content == whole[resume_at:]
    assert tail.headers["Content-Range"] == f"bytes {resume_at}-{size - 1}/{size}"
    metrics = mirror.metrics()
    assert metrics["p2p_mirror_downloads_started_total"] == 1
    assert metrics['p2p_mirror_blobs_served_total{source="swarm"}'] == 2
    assert _back_to_source(metrics) == 0


def test_swarm_blob_refused_without_credentials(auth_registry: Registry, cluster, start_mirror):
    # One mirror pulls with credentials, so the blob is in the swarm; the
    # seeder could fetch it only with the client's credentials.
    digest = auth_registry.layer_digests("oci")[0]
    first = start_mirror({auth_registry.host: auth_registry.url}, cluster.tracker_url)
    allowed = httpx.get(_blob_url(first.url, "oci", digest), auth=auth_registry.auth(), timeout=60)
    assert allowed.status_code == 200
    assert "sha256:" + hashlib.sha256(allowed.content).hexdigest() == digest
    assert first.metrics()['p2p_mirror_blobs_served_total{source="swarm"}'] == 1

    second = start_mirror({auth_registry.host: auth_registry.url}, cluster.tracker_url)
    refused = httpx.get(_blob_url(second.url, "oci", digest), timeout=60)

    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert allowed.content[:64] not in refused.content
    assert second.metrics()["p2p_mirror_downloads_started_total"] == 0


@pytest.mark.slow
def test_stall_mid_response_switches_to_upstream(registry: Registry, lone_tracker, start_mirror, tmp_path):
    mirror = start_mirror(
        {registry.host: registry.url}, lone_tracker, env={"P2P_MIRROR_SWARM_STALL_TIMEOUT": "5"}
    )
    digest = registry.layer_digests("big")[-1]
    good = httpx.get(_blob_url(registry.url, "big", digest), timeout=60).content
    metainfo = _register_torrent(lone_tracker, digest, _blob_url(registry.url, "big", digest), good, tmp_path / "seed")
    # The only peer has the first half of the blob: after those pieces the
    # swarm stalls, and the response goes on with the upstream's bytes.
    half = len(good) // 2
    (tmp_path / "seed" / digest.partition(":")[2]).write_bytes(good[:half] + bytes(len(good) - half))
    seeder = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX))
    try:
        seeder.add_task(metainfo, tmp_path / "seed")

        response = httpx.get(_blob_url(mirror.url, "big", digest), timeout=120)
    finally:
        seeder.close()

    assert response.status_code == 200
    assert response.content == good
    metrics = mirror.metrics()
    from_swarm = metrics['p2p_mirror_blob_bytes_served_total{source="swarm"}']
    from_upstream = metrics['p2p_mirror_blob_bytes_served_total{source="upstream"}']
    assert metrics['p2p_mirror_back_to_source_total{reason="swarm_stall"}'] == 1
    assert 0 < from_swarm <= half
    assert from_swarm + from_upstream == len(good)


class _RedirectingFront:
    """A registry front that responds to every blob request with a 307 to the registry, as a CDN redirect does."""

    def __init__(self, registry_url: str):
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._redirect()

            def do_GET(self) -> None:
                self._redirect()

            def _redirect(self) -> None:
                front.requests.append((self.command, self.path))
                self.send_response(307)
                self.send_header("Location", f"{registry_url}{self.path}?X-Amz-Signature=test&X-Amz-Expires=60")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:
                pass

        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _RedirectingFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("through", ["swarm", "upstream"])
def test_redirected_blob_followed(through, registry: Registry, cluster, start_mirror):
    digest = registry.layer_digests("oci")[0]
    good = httpx.get(_blob_url(registry.url, "oci", digest)).content
    with _RedirectingFront(registry.url) as front:
        tracker = cluster.tracker_url if through == "swarm" else ""
        mirror = start_mirror({"registry.test": front.url}, tracker)

        response = httpx.get(_blob_url(mirror.url, "oci", digest), timeout=60)

    assert response.status_code == 200
    assert response.content == good
    assert response.headers["Content-Length"] == str(len(good))
    assert ("HEAD", _blob_url("", "oci", digest)) in front.requests
    assert mirror.metrics()[f'p2p_mirror_blobs_served_total{{source="{through}"}}'] == 1


def test_restarted_mirror_seeds_its_cache(registry: Registry, lone_tracker, start_mirror, tmp_path):
    digest = registry.layer_digests("oci")[0]
    good = httpx.get(_blob_url(registry.url, "oci", digest)).content
    metainfo = _register_torrent(lone_tracker, digest, _blob_url(registry.url, "oci", digest), good, tmp_path / "seed")
    seeder = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX))
    seeder.add_task(metainfo, tmp_path / "seed", seed_mode=True)
    try:
        first = start_mirror({registry.host: registry.url}, lone_tracker, data_dir=tmp_path / "cache")
        assert httpx.get(_blob_url(first.url, "oci", digest), timeout=60).content == good
        first.stop()
    finally:
        seeder.close()

    # The restarted mirror is now the only peer that has the blob.
    restarted = start_mirror({registry.host: registry.url}, lone_tracker, data_dir=tmp_path / "cache")
    other = start_mirror({registry.host: registry.url}, lone_tracker)
    response = httpx.get(_blob_url(other.url, "oci", digest), timeout=60)

    assert response.content == good
    assert other.metrics()['p2p_mirror_blobs_served_total{source="swarm"}'] == 1
    assert "cache loaded blobs=1 seeding=1" in restarted.log()
