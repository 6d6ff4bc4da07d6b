"""Steady-state rate against the configured limit, between two libtorrent sessions on 127.0.0.1.

    .venv/bin/python -m benchmarks.limits --rates 1,4,16,64 --window 20 --runs 2

Each case is one rate, one direction (upload or download) and one scope
(host: the session's limit, or task: the task's limit). A seeding session
and a downloading session move one blob, and the limited side's libtorrent
byte counters are read after a warm-up and again after the window. The
output is a markdown table, and results.json in the output folder keeps
every run.

`--tick-interval MS` sets libtorrent's tick_interval (default 500 ms) on both
sessions, for comparing how the limiter's quota period changes the result.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import libtorrent as lt

from core.host_config import HostConfig
from swarm import SEEDER_PEER_ID_PREFIX, Session, SwarmSettings
from tests.support.torrents import make_torrent, write_random_file

MB = 1_000_000
UNUSED_ANNOUNCE = "http://127.0.0.1:9/announce"
PIECE_LENGTH = 1024 * 1024


@dataclass
class Run:
    rate: int  # configured limit, bytes/s
    direction: str  # upload or download
    scope: str  # host or task
    payload_rate: float  # payload bytes/s over the window
    total_rate: float  # payload and BitTorrent protocol bytes/s over the window
    seconds: float

    @property
    def ratio(self) -> float:
        return self.payload_rate / self.rate


def _config(rate: int, direction: str, scope: str) -> HostConfig:
    key = f"{direction}_limit" if scope == "host" else f"task_{direction}_limit"
    return HostConfig(**{key: rate})


def measure(
    blob: Path, metainfo: bytes, rate: int, direction: str, scope: str, warm_up: float, window: float,
    tick_interval: int | None, work: Path,
) -> Run:
    """Move the blob under one limit and return the rate over the window."""
    limited = _config(rate, direction, scope)
    seeder_config = limited if direction == "upload" else HostConfig()
    leecher_config = limited if direction == "download" else HostConfig()

    seeding = Session(SwarmSettings(
        listen_interfaces="127.0.0.1:0", peer_id_prefix=SEEDER_PEER_ID_PREFIX, **seeder_config.session_limits()
    ))
    downloading = Session(SwarmSettings(listen_interfaces="127.0.0.1:0", **leecher_config.session_limits()))
    save_path = work / "leech"
    try:
        if tick_interval:
            for session in (seeding, downloading):
                # NOTE: swarm exposes no tick_interval, so the benchmark sets it on the libtorrent session.
                session._session.apply_settings({"tick_interval": tick_interval})
        upload, download = seeder_config.task_limits()
        sent = seeding.add_task(metainfo, blob.parent, seed_mode=True, upload_limit=upload, download_limit=download)
        upload, download = leecher_config.task_limits()
        received = downloading.add_task(metainfo, save_path, upload_limit=upload, download_limit=download)
        received._handle.connect_peer(("127.0.0.1", seeding.listen_port))

        def counters() -> tuple[float, int, int]:
            if direction == "upload":
                status = sent._handle.status()
                return time.monotonic(), status.total_payload_upload, status.total_upload
            status = received._handle.status()
            return time.monotonic(), status.total_payload_download, status.total_download

        time.sleep(warm_up)
        started, payload_before, total_before = counters()
        time.sleep(window)
        ended, payload_after, total_after = counters()
        if received.is_complete:
            raise click.ClickException(
                f"the download completed inside the window under a {rate / MB:g} MB/s limit: the limit did not hold"
            )
    finally:
        downloading.close()
        seeding.close()
        shutil.rmtree(save_path, ignore_errors=True)

    seconds = ended - started
    return Run(rate, direction, scope, (payload_after - payload_before) / seconds, (total_after - total_before) / seconds,
               round(seconds, 2))


def table(runs: list[Run]) -> str:
    """Return a markdown table: one row per limit, direction and scope, with every run and the median."""
    lines = [
        "| limit | direction | scope | payload rate per run (MB/s) | median | median / limit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(run.rate, run.direction, run.scope) for run in runs}, key=lambda key: (key[0], key[1], key[2]))
    for rate, direction, scope in keys:
        group = [run for run in runs if (run.rate, run.direction, run.scope) == (rate, direction, scope)]
        median = statistics.median(run.payload_rate for run in group)
        each = ", ".join(f"{run.payload_rate / MB:.2f}" for run in group)
        lines.append(
            f"| {rate / MB:g} MB/s | {direction} | {scope} | {each} | {median / MB:.2f} | {100 * median / rate:.1f}% |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--rates", default="1,4,16,64", show_default=True, help="Limits to measure, MB/s (10^6 bytes), comma-separated.")
@click.option("--window", type=click.FloatRange(min=2), default=20, show_default=True, help="Seconds of each measured window.")
@click.option("--warm-up", type=click.FloatRange(min=0), default=3, show_default=True,
              help="Seconds from connecting the sessions to the start of the window.")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs of each case.")
@click.option("--tick-interval", type=click.IntRange(min=10, max=1000), default=None,
              help="libtorrent tick_interval in ms for both sessions [libtorrent's default, 500].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark-results/limits"),
              show_default=True, help="Folder for results.json and table.md.")
def main(rates: str, window: float, warm_up: float, runs: int, tick_interval: int | None, output: Path) -> None:
    """Measure steady-state rates under host and task limits, upload and download."""
    limits = [int(float(rate) * MB) for rate in rates.split(",")]
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="p2p-limits-"))
    results: list[Run] = []
    try:
        # One blob for every run, big enough for the fastest limit with room
        # for libtorrent's bursts of up to three seconds of banked quota.
        size = int(max(limits) * (warm_up + window + 6)) + 16 * 1024 * 1024
        blob = work / "seed" / "blob"
        blob.parent.mkdir()
        write_random_file(blob, size)
        metainfo = make_torrent(blob, UNUSED_ANNOUNCE, piece_length=PIECE_LENGTH)

        for rate in limits:
            for direction in ("upload", "download"):
                for scope in ("host", "task"):
                    for _ in range(runs):
                        run = measure(blob, metainfo, rate, direction, scope, warm_up, window, tick_interval, work)
                        results.append(run)
                        click.echo(
                            f"{rate / MB:g} MB/s {direction} {scope}: payload {run.payload_rate / MB:.2f} MB/s "
                            f"({100 * run.ratio:.1f}%), with protocol {run.total_rate / MB:.2f} MB/s",
                            err=True,
                        )
                        (output / "results.json").write_text(json.dumps({
                            "machine": {"python": platform.python_version(), "libtorrent": lt.__version__,
                                        "kernel": platform.release()},
                            "window": window, "warm_up": warm_up, "tick_interval": tick_interval,
                            "runs": [asdict(run) for run in results],
                        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    markdown = table(results)
    (output / "table.md").write_text(markdown + "\n")
    click.echo(markdown)


if __name__ == "__main__":
    main()
