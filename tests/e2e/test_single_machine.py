"""`p2p-tracker --embedded-seeder`: one process is all a single machine needs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.support.cluster import finish
from tests.support.origin import Origin
from tests.support.processes import VENV_BIN, free_port, running
from tests.support.torrents import write_random_file


def test_embedded_seeder_serves_fetch(tmp_path: Path):
    root = tmp_path / "origin"
    root.mkdir()
    digest = write_random_file(root / "f.bin", 5 * 1024 * 1024 + 3)
    port = free_port()
    tracker_url = f"http://127.0.0.1:{port}"

    with Origin(root) as origin, running(
        [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "tracker"), "--embedded-seeder"],
        ready_url=f"{tracker_url}/healthz",
        log_path=tmp_path / "tracker.log",
        env={"P2P_SEEDER_BITTORRENT_LISTEN": "127.0.0.1:0"},
    ):
        process = subprocess.Popen(
            [str(VENV_BIN / "p2p-fetch"), origin.url("/f.bin"), "-o", str(tmp_path / "out.bin"),
             "--tracker", tracker_url, "--listen", "127.0.0.1:0", "--json", "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        code, summary, stderr = finish(process)

        assert code == 0, stderr
        assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).hexdigest() == digest
        assert summary["bytes_from_seeder"] == 5 * 1024 * 1024 + 3
        assert origin.bytes_sent("/f.bin") <= 1.01 * (5 * 1024 * 1024 + 3)
        assert (tmp_path / "tracker" / "seeder" / "blobs").exists()
