"""Host limits in a running p2p-mirror: SIGHUP and the admin API change them mid-download; per-fetch limits.

Real processes on 127.0.0.1: an origin, a tracker, a seeder and a mirror;
each blob goes origin -> seeder -> (BitTorrent) -> mirror -> client.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.host_config import PATH_VARIABLE
from tests.support.cluster import finish, tracker_and_seeder
from tests.support.origin import Origin
from tests.support.processes import VENV_BIN, free_port, running
from tests.support.rates import MB
from tests.support.torrents import write_random_file

FETCH = "/api/v1/fetch"
ADMIN = "/api/v1/admin/host-config"

# Seconds for a new limit to show in libtorrent's payload rate, a moving
# average that takes seconds to settle, and seconds of each measured window.
WARM_UP = 5.0
WINDOW = 6.0
CEILING = 1.10


class StreamReader:
    """Fetch a blob through the mirror's fetch API in a thread, counting the bytes as they arrive.

    NOTE: the client receives the blob in order, and under a download limit
    that order lags far behind what libtorrent downloads (rarest first), so
    rates are read from the mirror's libtorrent counters instead.
    """

    def __init__(self, mirror_url: str, request: dict):
        self.received = 0
        self.status: int | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(mirror_url, request), daemon=True)
        self._thread.start()

    def _run(self, mirror_url: str, request: dict) -> None:
        try:
            with httpx.stream("POST", mirror_url + FETCH, json=request, timeout=60) as response:
                self.status = response.status_code
                for chunk in response.iter_raw(64 * 1024):
                    self.received += len(chunk)
                    if self._stop.is_set():
                        return
        except httpx.HTTPError as error:
            self.error = repr(error)

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.received == 0 and time.monotonic() < deadline:
            assert self.error is None, self.error
            time.sleep(0.1)
        assert self.received > 0, f"no byte within {timeout} s (status {self.status})"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def mirror_download_rate(mirror_url: str, seconds: float) -> tuple[float, list[float]]:
    """Average libtorrent's download payload rate in the mirror over `seconds`; return it and the samples in MB/s."""
    samples = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        samples.append(metric(mirror_url, "p2p_mirror_transfer_rate_bytes_per_second", 'direction="download"'))
        time.sleep(0.5)
    return sum(samples) / len(samples), [round(sample / MB, 1) for sample in samples]


def write_host_config(path: Path, **limits: str | int) -> None:
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in limits.items()))


def metric(base_url: str, name: str, labels: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=5).text
    series = f"{name}{{{labels}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} missing from {base_url}/metrics"
    return float(match.group(1))


@pytest.fixture
def host(tmp_path: Path, monkeypatch):
    """Start an origin, a tracker, a seeder (under a host configuration of its own) and a mirror.

    Yields a function that starts the mirror with the given host configuration file.
    """
    seeder_config = tmp_path / "seeder-host.toml"
    write_host_config(seeder_config, upload_limit="50MB/s", task_connections_limit=50)
    # The tracker and the seeder inherit the test's environment.
    monkeypatch.setenv(PATH_VARIABLE, str(seeder_config))
    root = tmp_path / "origin"
    root.mkdir()

    with Origin(root) as origin, tracker_and_seeder(tmp_path) as cluster:
        monkeypatch.delenv(PATH_VARIABLE)
        port = free_port()
        mirror_url = f"http://127.0.0.1:{port}"

        def start_mirror(host_config: Path):
            return running(
                [str(VENV_BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{port}", "--tracker", cluster.tracker_url,
                 "--data-dir", str(tmp_path / "mirror"), "--bittorrent-listen", "127.0.0.1:0",
                 "--host-config", str(host_config)],
                ready_url=f"{mirror_url}/healthz",
                log_path=tmp_path / "logs" / "mirror.log",
            )

        yield origin, cluster, mirror_url, start_mirror


@pytest.mark.slow
def test_sighup_changes_rate_of_running_download(host, tmp_path: Path):
    origin, cluster, mirror_url, start_mirror = host
    write_random_file(origin.root / "big.bin", 128 * 1024 * 1024)
    config = tmp_path / "host.toml"
    write_host_config(config, download_limit="2MB/s")

    with start_mirror(config) as mirror:
        reader = StreamReader(mirror_url, {"url": origin.url("/big.bin")})
        try:
            reader.wait_started()
            time.sleep(WARM_UP)
            before, samples_before = mirror_download_rate(mirror_url, WINDOW)
            seeder_upload = metric(cluster.seeder_url, "p2p_seeder_transfer_rate_bytes_per_second", 'direction="upload"')

            write_host_config(config, download_limit="6MB/s")
            mirror.send_signal(signal.SIGHUP)
            time.sleep(WARM_UP)
            after, samples_after = mirror_download_rate(mirror_url, WINDOW)
        finally:
            reader.close()

        assert reader.error is None, reader.error
        assert before <= CEILING * 2 * MB, f"{before / MB:.2f} MB/s under a 2 MB/s limit; samples {samples_before}"
        assert after >= 1.5 * CEILING * 2 * MB, (
            f"only {after / MB:.2f} MB/s after raising the limit to 6 MB/s; samples {samples_after}"
        )
        assert after <= CEILING * 6 * MB, f"{after / MB:.2f} MB/s under a 6 MB/s limit; samples {samples_after}"

        # The same download went on: one download started, none from the upstream.
        assert metric(mirror_url, "p2p_mirror_downloads_started_total", "") == 1
        assert metric(mirror_url, "p2p_mirror_back_to_source_total", 'reason="swarm_stall"') == 0
        assert metric(mirror_url, "p2p_mirror_rate_limit_bytes_per_second", 'direction="download",scope="host"') == 6e6
        assert httpx.get(mirror_url + ADMIN, timeout=5).json()["limits"]["download_limit"] == 6 * MB

    log = (tmp_path / "logs" / "mirror.log").read_text()
    assert "SIGHUP received" in log
    assert re.search(r"host limits applied .*download_limit=6000000", log)

    # The seeder applied its own host configuration and sent the blob.
    assert metric(cluster.seeder_url, "p2p_seeder_rate_limit_bytes_per_second", 'direction="upload",scope="host"') == 5e7
    assert metric(cluster.seeder_url, "p2p_seeder_connections_limit", 'scope="task"') == 50
    assert seeder_upload > 0


def test_admin_reload_applies_and_rejects(host, tmp_path: Path):
    _, _, mirror_url, start_mirror = host
    config = tmp_path / "host.toml"
    write_host_config(config, upload_limit="10MiB/s", task_download_limit="100Mbit/s")

    with start_mirror(config):
        shown = httpx.get(mirror_url + ADMIN, timeout=5).json()
        assert shown["path"] == str(config)
        assert shown["limits"]["upload_limit"] == 10 * 1024 * 1024
        assert shown["limits"]["task_download_limit"] == 12_500_000

        write_host_config(config, upload_limit="20MiB/s")
        reloaded = httpx.post(mirror_url + ADMIN + "/reload", timeout=5)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["limits"]["upload_limit"] == 20 * 1024 * 1024
        assert reloaded.json()["limits"]["task_download_limit"] == 0

        write_host_config(config, upload_limit="20 MiB per second")
        rejected = httpx.post(mirror_url + ADMIN + "/reload", timeout=5)
        assert rejected.status_code == 400
        assert "upload_limit" in rejected.json()["detail"]
        assert "'20 MiB per second'" in rejected.json()["detail"]
        assert httpx.get(mirror_url + ADMIN, timeout=5).json()["limits"]["upload_limit"] == 20 * 1024 * 1024
        assert metric(mirror_url, "p2p_mirror_rate_limit_bytes_per_second", 'direction="upload",scope="host"') == (
            20 * 1024 * 1024
        )


@pytest.mark.slow
def test_fetch_limits_through_mirror_within_host(host, tmp_path: Path):
    origin, _, mirror_url, start_mirror = host
    write_random_file(origin.root / "capped.bin", 96 * 1024 * 1024)
    write_random_file(origin.root / "slow.bin", 12 * MB)
    config = tmp_path / "host.toml"
    write_host_config(config, task_download_limit="3MB/s")

    with start_mirror(config):
        bad = httpx.post(mirror_url + FETCH, json={"url": origin.url("/slow.bin"), "download_limit": "fast"}, timeout=10)
        assert bad.status_code == 400
        assert "download_limit 'fast'" in bad.json()["detail"]

        # Asks for more than the host's per-task limit, so it gets the host's.
        capped = StreamReader(mirror_url, {"url": origin.url("/capped.bin"), "download_limit": "20MB/s"})
        try:
            capped.wait_started()
            time.sleep(WARM_UP)
            capped_rate, samples = mirror_download_rate(mirror_url, WINDOW)
        finally:
            capped.close()

        # p2p-fetch sends its --download-limit to the mirror, below the host's limit.
        code, summary, stderr = finish(subprocess.Popen(
            [str(VENV_BIN / "p2p-fetch"), origin.url("/slow.bin"), "-o", str(tmp_path / "out" / "slow.bin"),
             "--mirror", mirror_url, "--download-limit", "1.5MB/s", "--json", "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))

    assert capped.error is None, capped.error
    assert capped_rate <= CEILING * 3 * MB, f"{capped_rate / MB:.2f} MB/s under a 3 MB/s task limit; samples {samples}"
    assert capped_rate >= 0.7 * 3 * MB, f"only {capped_rate / MB:.2f} MB/s, samples {samples}: the transfer stalled"

    assert code == 0, stderr
    assert summary["size"] == 12 * MB
    # Whole-fetch average, ingest included: the limit bounds it from above.
    assert summary["seconds"] >= 12 * MB / (CEILING * 1.5 * MB), f"12 MB in {summary['seconds']} s"
