"""The servers a benchmark run needs, each started on its own testbed host and checked ready."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.testbed import Host, Testbed, TestbedError

VENV_BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parent.parent

ORIGIN_PORT = 8000
TRACKER_PORT = 6969
SEEDER_PORT = 7000
READY_TIMEOUT = 30.0


@dataclass
class Service:
    """A server process on a testbed host."""

    role: str
    host: Host
    process: subprocess.Popen
    url: str


def wait_ready(testbed: Testbed, service: Service, check: Callable[[httpx.Response], bool], path: str) -> None:
    """Poll `service.url + path` from inside its host until `check` accepts the response.

    Raises TestbedError when the process exits first or READY_TIMEOUT passes.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    last_error = "no answer"
    while time.monotonic() < deadline:
        if testbed.poll(service.process) is not None:
            raise TestbedError(f"{service.role} exited with {service.process.returncode} before it was ready")

        def probe() -> httpx.Response:
            return httpx.get(service.url + path, timeout=1.0)

        try:
            response = testbed.call_in(service.host, probe)
            if check(response):
                return
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as error:
            last_error = str(error)
        time.sleep(0.1)
    raise TestbedError(f"{service.role} at {service.url} not ready within {READY_TIMEOUT:.0f} s: {last_error}")


def start_origin(testbed: Testbed, root: Path, work: Path) -> tuple[Service, Path]:
    """Serve `root` from the origin host; return the service and the path of its counters file."""
    host = testbed.services["origin"]
    stats = work / "origin-stats.json"
    process = testbed.spawn(
        host,
        [sys.executable, "-m", "benchmarks.origin", "--listen", f"{host.address}:{ORIGIN_PORT}",
         "--root", str(root), "--stats", str(stats)],
        stdout=work / "logs" / "origin.log",
        cwd=REPO_ROOT,
    )
    service = Service("origin", host, process, f"http://{host.address}:{ORIGIN_PORT}")
    wait_ready(testbed, service, lambda response: response.status_code == 404, "/ready-probe")
    return service, stats


def origin_bytes_sent(stats: Path) -> int:
    """Return the body bytes the benchmark origin has sent, from its counters file."""
    return json.loads(stats.read_text())["bytes_sent"]


def start_tracker(testbed: Testbed, work: Path) -> Service:
    host = testbed.services["tracker"]
    process = testbed.spawn(
        host,
        [str(VENV_BIN / "p2p-tracker"), "--listen", f"{host.address}:{TRACKER_PORT}",
         "--data-dir", str(work / "tracker")],
        stdout=work / "logs" / "tracker.log",
    )
    service = Service("tracker", host, process, f"http://{host.address}:{TRACKER_PORT}")
    wait_ready(testbed, service, lambda response: response.status_code == 200, "/healthz")
    return service


def start_seeder(testbed: Testbed, work: Path, tracker: Service) -> Service:
    """Start the seeder and wait until the tracker lists it, so the first task is dispatched at once."""
    host = testbed.services["seeder"]
    process = testbed.spawn(
        host,
        [str(VENV_BIN / "p2p-seeder"), "--listen", f"{host.address}:{SEEDER_PORT}",
         "--tracker", tracker.url, "--data-dir", str(work / "seeder")],
        stdout=work / "logs" / "seeder.log",
        env={"P2P_SEEDER_BITTORRENT_LISTEN": f"{host.address}:0", "P2P_SEEDER_HEARTBEAT_INTERVAL": "1"},
    )
    service = Service("seeder", host, process, f"http://{host.address}:{SEEDER_PORT}")
    wait_ready(testbed, service, lambda response: response.status_code == 200, "/healthz")

    listed = Service("tracker", tracker.host, tracker.process, tracker.url)
    wait_ready(testbed, listed, lambda response: response.status_code == 200 and bool(response.json()),
               "/api/v1/seeders")
    return service


def start_opentracker(testbed: Testbed, work: Path, whitelist: Path) -> Service:
    """Start opentracker on the tracker host, serving only the info hashes in `whitelist`.

    opentracker chroots into the whitelist's folder before it reads the file,
    so the file is named relative to that folder.
    """
    host = testbed.services["tracker"]
    process = testbed.spawn(
        host,
        ["opentracker", "-i", host.address, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
         "-d", str(whitelist.parent), "-w", whitelist.name, "-u", "nobody"],
        stdout=work / "logs" / "opentracker.log",
    )
    service = Service("tracker", host, process, f"http://{host.address}:{TRACKER_PORT}")
    # Any HTTP response to /stats means opentracker is listening.
    wait_ready(testbed, service, lambda response: response.status_code < 500, "/stats")
    return service
