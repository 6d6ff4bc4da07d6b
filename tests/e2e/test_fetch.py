"""`p2p-fetch` end to end: a real tracker, seeder and origin on loopback, and real fetch processes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, finish, tracker_and_seeder
from tests.support.origin import Origin
from tests.support.torrents import write_random_file

MiB = 1024 * 1024
# The seeder's smallest piece length, so small files have exactly that piece.
PIECE = 256 * 1024

EXIT_ORIGIN = 3
EXIT_INTEGRITY = 4


@pytest.fixture
def origin(tmp_path: Path):
    root = tmp_path / "origin"
    root.mkdir()
    with Origin(root) as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path):
    with tracker_and_seeder(tmp_path) as running_cluster:
        yield running_cluster


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Return partial files a failed fetch left in its output folder."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


@pytest.mark.slow
def test_four_hosts_origin_sends_once(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "big.bin", 64 * MiB)
    url = origin.url("/big.bin")

    processes = [cluster.fetch(url, tmp_path / f"host{n}" / "big.bin", "--seed-time", "3") for n in range(4)]
    results = [finish(process) for process in processes]

    for code, _, stderr in results:
        assert code == 0, stderr
    for n in range(4):
        assert sha256_file(tmp_path / f"host{n}" / "big.bin") == digest
    assert origin.bytes_sent("/big.bin") <= 1.01 * 64 * MiB
    assert sum(summary["bytes_from_peers"] for _, summary, _ in results) > 0


@pytest.mark.parametrize("size", [0, 1, PIECE, PIECE + 1, 3 * MiB + 17])
def test_sizes(origin: Origin, cluster: Cluster, tmp_path: Path, size: int):
    digest = write_random_file(origin.root / "f.bin", size)

    code, summary, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == 0, stderr
    assert summary["size"] == size
    assert sha256_file(tmp_path / "out" / "f.bin") == digest


def test_no_content_length(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "f.bin", 2 * MiB + 5)
    origin.omit_content_length("/f.bin")
    origin.disable_ranges("/f.bin")

    code, _, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == 0, stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == digest


def test_signed_redirects_share_one_ingest(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "f.bin", 4 * MiB)
    origin.redirect("/f.bin")

    first = finish(cluster.fetch(origin.url("/f.bin", signed=True), tmp_path / "a" / "f.bin"))
    second = finish(cluster.fetch(origin.url("/f.bin", signed=True), tmp_path / "b" / "f.bin"))

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert sha256_file(tmp_path / "a" / "f.bin") == digest
    assert sha256_file(tmp_path / "b" / "f.bin") == digest
    assert origin.bytes_sent("/f.bin") <= 1.01 * 4 * MiB


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "404"), (500, "500")],
)
def test_origin_error_fails_cleanly(origin: Origin, cluster: Cluster, tmp_path: Path, status: int, message: str):
    write_random_file(origin.root / "f.bin", 1 * MiB)
    origin.fail("/f.bin", status)

    code, _, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == EXIT_ORIGIN
    assert message in stderr
    assert leftovers(tmp_path / "out") == []
    assert cluster.cached_blobs() == []


def test_origin_429_retried_after_delay(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "f.bin", 1 * MiB)
    origin.fail("/f.bin", 429, times=1, retry_after=1)
    started = time.monotonic()

    code, _, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == 0, stderr
    assert time.monotonic() - started >= 1
    assert sha256_file(tmp_path / "out" / "f.bin") == digest


def test_wrong_digest_fails_cleanly(origin: Origin, cluster: Cluster, tmp_path: Path):
    write_random_file(origin.root / "f.bin", 1 * MiB)
    wrong = "sha256:" + "0" * 64

    code, _, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin", "--digest", wrong))

    assert code == EXIT_INTEGRITY
    assert "digest mismatch" in stderr
    assert leftovers(tmp_path / "out") == []
    assert cluster.cached_blobs() == []


def test_right_digest_accepted(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "f.bin", 1 * MiB)

    code, _, stderr = finish(
        cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin", "--digest", f"sha256:{digest}")
    )

    assert code == 0, stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == digest


def test_cut_connection_resumed(origin: Origin, cluster: Cluster, tmp_path: Path):
    digest = write_random_file(origin.root / "f.bin", 8 * MiB)
    origin.cut("/f.bin", at=3 * MiB)

    code, _, stderr = finish(cluster.fetch(origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == 0, stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == digest
    assert origin.bytes_sent("/f.bin") <= 8 * MiB + 3 * MiB


def test_usage_errors_exit_2(cluster: Cluster, tmp_path: Path):
    for extra in (["--digest", "md5:abc"], ["--header", "no colon"], ["--download-limit", "fast"]):
        code, _, stderr = finish(cluster.fetch("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", *extra))
        assert code == 2, (extra, stderr)
        assert "Traceback" not in stderr
