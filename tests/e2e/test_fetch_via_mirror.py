"""`p2p-fetch` through the host's `p2p-mirror`: one session per host, shared by every download."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import finish, tracker_and_seeder
from tests.support.origin import Origin
from tests.support.processes import VENV_BIN, free_port, running
from tests.support.torrents import write_random_file

MiB = 1024 * 1024


@pytest.fixture
def host(tmp_path: Path):
    """An origin, a tracker and seeder, and one p2p-mirror; yields (origin, mirror URL)."""
    root = tmp_path / "origin"
    root.mkdir()
    port = free_port()
    with Origin(root) as origin, tracker_and_seeder(tmp_path) as cluster, running(
        [str(VENV_BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{port}", "--tracker", cluster.tracker_url,
         "--data-dir", str(tmp_path / "mirror"), "--bittorrent-listen", "127.0.0.1:0"],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        log_path=tmp_path / "logs" / "mirror.log",
    ):
        yield origin, f"http://127.0.0.1:{port}"


def fetch(mirror_url: str, url: str, output: Path, *extra: str) -> subprocess.Popen:
    # No --tracker: the mirror has its own tracker setting.
    return subprocess.Popen(
        [str(VENV_BIN / "p2p-fetch"), url, "-o", str(output), "--mirror", mirror_url, "--json", "--timeout", "120",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_fetch_goes_through_mirror(host, tmp_path: Path):
    origin, mirror_url = host
    digest = write_random_file(origin.root / "f.bin", 6 * MiB + 1)

    code, summary, stderr = finish(fetch(mirror_url, origin.url("/f.bin"), tmp_path / "out" / "f.bin"))

    assert code == 0, stderr
    assert summary["via"] == "mirror"
    assert summary["size"] == 6 * MiB + 1
    assert hashlib.sha256((tmp_path / "out" / "f.bin").read_bytes()).hexdigest() == digest
    assert origin.bytes_sent("/f.bin") <= 1.01 * (6 * MiB + 1)


def test_mirror_fetch_wrong_digest_leaves_nothing(host, tmp_path: Path):
    origin, mirror_url = host
    write_random_file(origin.root / "f.bin", 1 * MiB)
    wrong = "sha256:" + "1" * 64

    code, _, stderr = finish(fetch(mirror_url, origin.url("/f.bin"), tmp_path / "out" / "f.bin", "--digest", wrong))

    # Exit 4 when the body ends one byte short (the mirror's mark of a digest
    # mismatch). Exit 1 when httpx loses the bytes that came with the close,
    # so the client detects only the abort.
    assert code in (1, 4), stderr
    assert "digest mismatch" in stderr or "aborted" in stderr
    assert "Traceback" not in stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_mirror_fetch_origin_404(host, tmp_path: Path):
    origin, mirror_url = host

    code, _, stderr = finish(fetch(mirror_url, origin.url("/missing.bin"), tmp_path / "out" / "m.bin"))

    assert code == 3, stderr
    assert "404" in stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_named_mirror_down_is_an_error(tmp_path: Path):
    port = free_port()

    code, _, stderr = finish(fetch(f"http://127.0.0.1:{port}", "http://127.0.0.1:9/x.bin", tmp_path / "x.bin"))

    assert code == 6
    assert "unreachable" in stderr
