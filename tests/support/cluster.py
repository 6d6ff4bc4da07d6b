"""A tracker and a seeder as real processes on loopback, for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import VENV_BIN, free_port, running


@dataclass
class Cluster:
    tracker_url: str
    seeder_url: str
    seeder_data_dir: Path
    log_dir: Path

    def fetch(self, url: str, output: Path, *extra: str, timeout: float = 120) -> subprocess.Popen:
        """Start `p2p-fetch` for `url` and return the process; its stdout is the JSON summary."""
        return subprocess.Popen(
            [str(VENV_BIN / "p2p-fetch"), url, "-o", str(output), "--tracker", self.tracker_url,
             "--listen", "127.0.0.1:0", "--no-mirror", "--json", "--timeout", str(timeout), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def cached_blobs(self) -> list[Path]:
        """Return the content files in the seeder's cache."""
        return [path for path in (self.seeder_data_dir / "blobs").rglob("*") if path.is_file()] if (
            self.seeder_data_dir / "blobs"
        ).exists() else []


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, dict | None, str]:
    """Wait for a `p2p-fetch` process; return its exit code, JSON summary and stderr."""
    stdout, stderr = process.communicate(timeout=timeout)
    summary = json.loads(stdout) if process.returncode == 0 and stdout.strip() else None
    return process.returncode, summary, stderr.decode(errors="replace")


@contextmanager
def tracker_and_seeder(tmp_path: Path) -> Iterator[Cluster]:
    tracker_port, seeder_port = free_port(), free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    seeder_url = f"http://127.0.0.1:{seeder_port}"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    seeder_dir = tmp_path / "seeder"

    with ExitStack() as stack:
        stack.enter_context(running(
            [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{tracker_port}",
             "--data-dir", str(tmp_path / "tracker")],
            ready_url=f"{tracker_url}/healthz",
            log_path=log_dir / "tracker.log",
        ))
        stack.enter_context(running(
            [str(VENV_BIN / "p2p-seeder"), "--listen", f"127.0.0.1:{seeder_port}",
             "--tracker", tracker_url, "--data-dir", str(seeder_dir)],
            ready_url=f"{seeder_url}/healthz",
            log_path=log_dir / "seeder.log",
            env={"P2P_SEEDER_BITTORRENT_LISTEN": "127.0.0.1:0", "P2P_SEEDER_HEARTBEAT_INTERVAL": "1"},
        ))
        yield Cluster(tracker_url, seeder_url, seeder_dir, log_dir)
