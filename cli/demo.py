"""`make demo`: a tracker with its seeder and three peers fetch one real file, then two hosts pull an image.

It serves a file of this machine of at least 50 MB from a local HTTP origin
and starts `p2p-tracker` with a seeder in its process. Three `p2p-fetch` run at
once; the demo prints what the origin sent and what the peers exchanged, and
checks every copy against the original. It stops everything it started. The
image half is in cli/demo_image.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.demo_image import DemoSkipped, run_image_demo
from cli.demo_origin import CountingOrigin
from core.units import format_size

MIN_FILE_BYTES = 50 * 1000 * 1000
MAX_FILE_BYTES = 600 * 1024 * 1024
SEARCH_ROOTS = ("/usr/lib", "/usr/share", "/opt", "/usr/local", "/usr/bin")
# Bound the walk so a huge tree cannot stall the demo.
MAX_ENTRIES_SCANNED = 300_000
PEERS = 3
BIN = Path(sys.executable).parent
WORK = Path(".demo").absolute()


def find_real_file() -> Path:
    """Return the smallest readable file of this machine between 50 MB and 600 MiB."""
    chosen = os.environ.get("P2P_DEMO_FILE")
    if chosen:
        return Path(chosen)

    best: tuple[int, str] | None = None
    scanned = 0
    for root in SEARCH_ROOTS:
        for directory, _, files in os.walk(root):
            for name in files:
                scanned += 1
                path = os.path.join(directory, name)
                try:
                    size = os.stat(path, follow_symlinks=False).st_size
                except OSError:
                    continue
                if MIN_FILE_BYTES <= size <= MAX_FILE_BYTES and os.access(path, os.R_OK):
                    if best is None or size < best[0]:
                        best = (size, path)
            if scanned > MAX_ENTRIES_SCANNED:
                break
    if best is None:
        raise SystemExit("no file of 50 MB to 600 MiB found on this machine; set P2P_DEMO_FILE=PATH")
    return Path(best[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}; see {WORK}/*.log")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy within {timeout} s; see {WORK}/*.log")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    source = find_real_file()
    expected = sha256_of(source)
    print(f"demo file: {source} ({format_size(source.stat().st_size)}, sha256:{expected[:16]}...)")

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    origin = CountingOrigin(source)
    origin.start()
    tracker_port = free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    started: list[subprocess.Popen] = []

    try:
        tracker_log = open(WORK / "tracker.log", "wb")
        tracker = subprocess.Popen(
            [str(BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{tracker_port}",
             "--data-dir", str(WORK / "tracker"), "--embedded-seeder"],
            stdout=tracker_log, stderr=subprocess.STDOUT,
            env={**os.environ, "P2P_SEEDER_BITTORRENT_LISTEN": "127.0.0.1:0"},
        )
        started.append(tracker)
        wait_healthy(f"{tracker_url}/healthz", tracker)
        print(f"tracker with its seeder: {tracker_url}")

        fetches = []
        began = time.monotonic()
        for number in range(1, PEERS + 1):
            output = WORK / f"peer{number}" / source.name
            fetches.append((output, subprocess.Popen(
                [str(BIN / "p2p-fetch"), origin.url, "-o", str(output), "--tracker", tracker_url,
                 "--listen", "127.0.0.1:0", "--no-mirror", "--seed-time", "3", "--json", "--timeout", "600"],
                stdout=subprocess.PIPE, stderr=open(WORK / f"peer{number}.log", "wb"),
            )))
            started.append(fetches[-1][1])
        print(f"{PEERS} peers fetching {origin.url} at once ...")

        failures = 0
        total_from_seeder = total_from_peers = 0
        for number, (output, process) in enumerate(fetches, start=1):
            stdout, _ = process.communicate(timeout=900)
            if process.returncode != 0:
                failures += 1
                print(f"peer{number}: p2p-fetch exited with {process.returncode}; see {WORK}/peer{number}.log")
                continue
            summary = json.loads(stdout)
            total_from_seeder += summary["bytes_from_seeder"]
            total_from_peers += summary["bytes_from_peers"]
            verdict = "correct" if sha256_of(output) == expected else "WRONG CONTENT"
            failures += verdict != "correct"
            print(
                f"peer{number}: {verdict}, {summary['seconds']:.1f} s, "
                f"{format_size(summary['bytes_from_seeder'])} from the seeder, "
                f"{format_size(summary['bytes_from_peers'])} from other peers"
            )
        elapsed = time.monotonic() - began

        size = origin.size
        print()
        print(f"origin sent:          {format_size(origin.bytes_sent)} "
              f"({origin.bytes_sent / size:.2f} copies of the file, {origin.requests} requests)")
        print(f"seeder sent to peers: {format_size(total_from_seeder)} ({total_from_seeder / size:.2f} copies)")
        print(f"peers exchanged:      {format_size(total_from_peers)} ({total_from_peers / size:.2f} copies)")
        print(f"all {PEERS} fetches done in {elapsed:.1f} s")
        if failures:
            raise SystemExit(f"demo failed: {failures} of {PEERS} peers did not get a correct copy")
        print("every copy matches the original")
    finally:
        for process in reversed(started):
            stop(process)
        origin.stop()

    print()
    try:
        run_image_demo(WORK / "image")
    except DemoSkipped as reason:
        print(f"image demo skipped: {reason}")


if __name__ == "__main__":
    main()
