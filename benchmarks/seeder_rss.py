"""Peak resident memory of `p2p-seeder` while it ingests files of several sizes.

    .venv/bin/python -m benchmarks.seeder_rss --sizes 64MiB,1GiB

For each size, a fresh tracker and seeder run as processes on loopback, a
local HTTP origin (in this process) serves a file of random bytes, and one
task is requested through the tracker. The seeder's peak resident set size
(`VmHWM` in /proc/PID/status) is read after start-up and again once the task
is ready, so the difference is what the ingest itself added. The seeder
hashes while it downloads and writes at offsets, so the peak should not
grow with the file size.

With `--throttle`, every origin response is sent at that rate, as from an
origin whose connections are slow, and `--parallel-ranges 1` against the
default shows what parallel ranges gain.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import httpx

from core.units import format_size, parse_rate, parse_size
from tests.support.origin import Origin
from tests.support.processes import VENV_BIN, free_port, running

# Seconds one ingest may take; 1 GiB from loopback takes a few seconds.
INGEST_TIMEOUT = 600


def peak_rss(pid: int) -> int:
    """Return the peak resident set size of a process in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def write_random_file(path: Path, size: int) -> None:
    """Write `size` random bytes to `path`, unless a file of that size is there already."""
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 16 * 1024 * 1024))
            file.write(block)
            remaining -= len(block)


def measure(size: int, work: Path, origin: Origin, seeder_env: dict[str, str]) -> dict[str, float]:
    name = f"random-{size}.bin"
    write_random_file(origin.root / name, size)
    run_dir = work / f"run-{size}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    tracker_port, seeder_port = free_port(), free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    tracker_args = [
        str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{tracker_port}", "--data-dir", str(run_dir / "tracker"),
    ]
    seeder_args = [
        str(VENV_BIN / "p2p-seeder"),
        "--listen", f"127.0.0.1:{seeder_port}",
        "--tracker", tracker_url,
        "--data-dir", str(run_dir / "seeder"),
    ]
    with running(tracker_args, ready_url=f"{tracker_url}/healthz", log_path=run_dir / "tracker.log"), \
            running(
                seeder_args,
                ready_url=f"http://127.0.0.1:{seeder_port}/healthz",
                log_path=run_dir / "seeder.log",
                env={"P2P_SEEDER_HEARTBEAT_INTERVAL": "0.5", **seeder_env},
            ) as seeder:
        # The tracker dispatches only to a seeder it has heard from.
        deadline = time.monotonic() + 10
        while not httpx.get(f"{tracker_url}/api/v1/seeders").json():
            if time.monotonic() > deadline:
                raise RuntimeError("the seeder never sent a heartbeat")
            time.sleep(0.1)
        after_start = peak_rss(seeder.pid)

        started = time.monotonic()
        task = httpx.post(
            f"{tracker_url}/api/v1/tasks?wait={INGEST_TIMEOUT}",
            json={"url": origin.url(f"/{name}")},
            timeout=INGEST_TIMEOUT + 10,
        ).json()
        seconds = time.monotonic() - started
        if task["state"] != "ready":
            raise RuntimeError(f"the ingest of {format_size(size)} did not finish: {task}")
        after_ingest = peak_rss(seeder.pid)

    shutil.rmtree(run_dir, ignore_errors=True)
    return {"size": size, "after_start": after_start, "after_ingest": after_ingest, "seconds": seconds}


@click.command()
@click.option("--sizes", default="64MiB,1GiB", show_default=True, help="Comma-separated file sizes, with units.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the random files and the processes' data; default a new temp directory.",
)
@click.option("--parallel-ranges", type=int, help="Seeder setting parallel_ranges; default the seeder's own.")
@click.option("--hash-buffer", help="Seeder setting hash_buffer, e.g. 8MiB; default the seeder's own.")
@click.option(
    "--throttle",
    help="Rate of each origin response, e.g. 16MiB/s, to compare parallel_ranges; default no limit.",
)
def main(
    sizes: str, work_dir: Path | None, parallel_ranges: int | None, hash_buffer: str | None, throttle: str | None
) -> None:
    """Print the seeder's peak RSS after start-up and after one ingest, per file size."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="seeder-rss-"))
    (work / "origin").mkdir(parents=True, exist_ok=True)
    seeder_env = {}
    if parallel_ranges:
        seeder_env["P2P_SEEDER_PARALLEL_RANGES"] = str(parallel_ranges)
    if hash_buffer:
        seeder_env["P2P_SEEDER_HASH_BUFFER"] = hash_buffer

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, work dir {work}")
    print("| file size | peak RSS after start | peak RSS after ingest | added by the ingest | ingest time |")
    print("| --- | --- | --- | --- | --- |")
    with Origin(work / "origin") as origin:
        for text in sizes.split(","):
            size = parse_size(text.strip())
            if throttle:
                origin.throttle(f"/random-{size}.bin", parse_rate(throttle))
            result = measure(size, work, origin, seeder_env)
            print(
                f"| {format_size(result['size'])} | {format_size(result['after_start'])} "
                f"| {format_size(result['after_ingest'])} "
                f"| {format_size(result['after_ingest'] - result['after_start'])} "
                f"| {result['seconds']:.1f} s |",
                flush=True,
            )
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
