"""The ways of getting one blob to every client host that the swarm benchmark compares.

Each `run_*` function starts what its method needs on the testbed, starts one
client per host at the same moment, records when each host has the complete
blob, stops everything it started and checks every copy against the blob's
sha256. None of them asserts anything about time: they measure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bencodepy
import httpx

from benchmarks.registry import (
    Image,
    blob_bytes_sent,
    build_image,
    push_image,
    registries_conf,
    start_registry,
)
from benchmarks.services import (
    VENV_BIN,
    Service,
    origin_bytes_sent,
    start_opentracker,
    start_origin,
    start_seeder,
    start_tracker,
    wait_ready,
)
from benchmarks.testbed import Host, Testbed

BLOB_NAME = "blob.bin"

# The name each method has in the results, by its command-line name.
LABELS = {
    "p2p-fetch": "p2p-fetch",
    "mirror": "p2p-mirror + skopeo",
    "http": "direct HTTP",
    "bittorrent": "plain BitTorrent",
}

MIRROR_PORT = 65001
POLL_INTERVAL = 0.05
TIMELINE_INTERVAL = 1.0

# Clients keep seeding until the benchmark stops them, after the last host is
# done; this only bounds a client the benchmark failed to stop.
SEED_SECONDS = 3600

ARIA2_RPC_PORT = 6800
ARIA2_PEER_PORT = 6881
# aria2c settings of every host: the tracker is the only source of peers
# (no DHT or local peer discovery, which would look for networks outside the
# testbed), and files are allocated with fallocate instead of written with zeros.
ARIA2_COMMON = [
    "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
    f"--listen-port={ARIA2_PEER_PORT}", "--file-allocation=falloc",
    "--seed-ratio=0.0", "--summary-interval=0", "--show-console-readout=false", "--console-log-level=warn",
]


@dataclass(frozen=True)
class Blob:
    """The file every host fetches, with its torrent for plain BitTorrent."""

    path: Path
    size: int
    sha256: str
    torrent: Path
    info_hash: str


@dataclass
class RunResult:
    """Measurements of one method with one number of hosts."""

    method: str
    hosts: int
    size: int
    rate: int
    times: list[float | None]  # seconds from the common start to each host's complete copy; None if it failed
    errors: list[str] = field(default_factory=list)
    origin_bytes: int | None = None  # body bytes the origin's server counted
    origin_link_bytes: int = 0  # bytes out of the origin host's link, headers included
    seeder_link_bytes: int | None = None  # bytes out of the seeder host's link, headers included; None without a seeder
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # user + system, by role
    load_average: float = 0.0  # one-minute load average of the machine when the run started
    # Once a second: seconds from the start, then each host's bytes received
    # so far by role, from the bridge's counters, headers included.
    timeline: list[list] = field(default_factory=list)
    note: str = ""


def make_blob(directory: Path, size: int, tracker_url: str) -> Blob:
    """Write `size` random bytes and a torrent of them (mktorrent, default piece length) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BLOB_NAME
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * 1024 * 1024))
            hasher.update(chunk)
            file.write(chunk)
            remaining -= len(chunk)

    torrent = directory.parent / f"{BLOB_NAME}.torrent"
    torrent.unlink(missing_ok=True)
    subprocess.run(
        ["mktorrent", "-a", f"{tracker_url}/announce", "-o", str(torrent), str(path)],
        check=True, capture_output=True, timeout=600,
    )
    info = bencodepy.decode(torrent.read_bytes())[b"info"]
    info_hash = hashlib.sha1(bencodepy.encode(info)).hexdigest()
    return Blob(path, size, hasher.hexdigest(), torrent, info_hash)


class Run:
    """The processes, counters and folders of one method with one number of hosts."""

    def __init__(self, testbed: Testbed, method: str, clients: Sequence[Host], blob: Blob, work: Path):
        self.testbed = testbed
        self.clients = list(clients)
        self.blob = blob
        self.work = work
        shutil.rmtree(work, ignore_errors=True)
        (work / "logs").mkdir(parents=True)
        self.result = RunResult(method, len(clients), blob.size, testbed.rate, [None] * len(clients))
        self._processes: list[tuple[str, subprocess.Popen]] = []
        # Where each host's copy ends up and the sha256 (hex) it must have.
        self.copy_path: Callable[[Host], Path] = self.output
        self.expected_sha256 = blob.sha256

    def host_dir(self, host: Host) -> Path:
        directory = self.work / host.role
        directory.mkdir(exist_ok=True)
        return directory

    def output(self, host: Host) -> Path:
        return self.host_dir(host) / BLOB_NAME

    def spawn(self, role: str, host: Host, args: Sequence[str], **options) -> subprocess.Popen:
        process = self.testbed.spawn(host, args, **options)
        self._processes.append((role, process))
        return process

    def track(self, role: str, service: Service) -> Service:
        self._processes.append((role, service.process))
        return service

    def start_clock(self) -> None:
        """Record the counters before the clients start."""
        self.result.load_average = os.getloadavg()[0]
        self._origin_before = self.testbed.link_bytes(self.testbed.services["origin"])[0]
        self._seeder_before = self.testbed.link_bytes(self.testbed.services["seeder"])[0]
        self._started = time.monotonic()

    def watch(self, clients: Sequence[tuple[subprocess.Popen, Callable[[], bool]]], timeout: float) -> None:
        """Record when each client's `done` check first holds; a client that exits before is a failure."""
        pending = set(range(len(clients)))
        deadline = self._started + timeout
        next_sample = self._started
        while pending and time.monotonic() < deadline:
            if time.monotonic() >= next_sample:
                self._sample_links()
                next_sample += TIMELINE_INTERVAL
            for index in sorted(pending):
                process, done = clients[index]
                if done():
                    self.result.times[index] = round(time.monotonic() - self._started, 3)
                    pending.discard(index)
                elif self.testbed.poll(process) is not None:
                    self.result.errors.append(
                        f"{self.clients[index].role}: exited with {process.returncode} before completing; "
                        f"see {self.work / 'logs'}"
                    )
                    pending.discard(index)
            time.sleep(POLL_INTERVAL)
        for index in sorted(pending):
            self.result.errors.append(f"{self.clients[index].role}: not complete within {timeout:.0f} s")

    def _sample_links(self) -> None:
        received = {role: counters[1] for role, counters in self.testbed.all_link_bytes().items()}
        if not self.result.timeline:
            self._received_before = received
        elapsed = round(time.monotonic() - self._started, 2)
        self.result.timeline.append([elapsed, {role: received[role] - self._received_before.get(role, 0)
                                               for role in received}])

    def finish(self, origin_stats: Path | None) -> RunResult:
        """Stop every process, then read the counters and check every copy."""
        origin_after = self.testbed.link_bytes(self.testbed.services["origin"])[0]
        seeder_after = self.testbed.link_bytes(self.testbed.services["seeder"])[0]
        for _, process in reversed(self._processes):
            self.testbed.stop(process)

        result = self.result
        result.origin_link_bytes = origin_after - self._origin_before
        if any(role == "seeder" for role, _ in self._processes):
            result.seeder_link_bytes = seeder_after - self._seeder_before
        if origin_stats is not None:
            result.origin_bytes = origin_bytes_sent(origin_stats)
        for role, process in self._processes:
            result.cpu_seconds[role] = round(
                result.cpu_seconds.get(role, 0.0) + self.testbed.cpu_seconds(process), 2
            )

        for index, host in enumerate(self.clients):
            if result.times[index] is None:
                continue
            actual = _sha256_of(self.copy_path(host))
            if actual != self.expected_sha256:
                result.errors.append(f"{host.role}: copy has sha256 {actual}, expected {self.expected_sha256}")
                result.times[index] = None
        return result


def _sha256_of(path: Path) -> str | None:
    if not path.is_file():
        return None
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(4 * 1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


def _exited_ok(testbed: Testbed, process: subprocess.Popen) -> Callable[[], bool]:
    return lambda: testbed.poll(process) == 0


def run_p2p_fetch(testbed: Testbed, clients: Sequence[Host], blob: Blob, work: Path, timeout: float) -> RunResult:
    """p2p-fetch on every host at once, cold: a new tracker and a seeder with an empty cache."""
    run = Run(testbed, LABELS["p2p-fetch"], clients, blob, work)
    origin, stats = start_origin(testbed, blob.path.parent, work)
    run.track("origin", origin)
    tracker = run.track("tracker", start_tracker(testbed, work))
    run.track("seeder", start_seeder(testbed, work, tracker))
    url = f"{origin.url}/{BLOB_NAME}"

    run.start_clock()
    watched = []
    for host in clients:
        output = run.output(host)
        process = run.spawn(
            "clients", host,
            [str(VENV_BIN / "p2p-fetch"), url, "-o", str(output), "--tracker", tracker.url,
             "--listen", f"{host.address}:0", "--json", "--seed-time", str(SEED_SECONDS),
             "--timeout", str(timeout)],
            stdout=work / "logs" / f"{host.role}.log",
        )
        # p2p-fetch renames the file into place only once it is complete and verified.
        watched.append((process, output.exists))
    run.watch(watched, timeout)
    return run.finish(stats)


def run_mirror(testbed: Testbed, clients: Sequence[Host], blob: Blob, work: Path, timeout: float) -> RunResult:
    """skopeo on every host at once, pulling an image whose layer is the blob through the host's p2p-mirror.

    Cold as p2p-fetch is: a new tracker, a seeder and mirrors with empty
    caches. The upstream is a registry on the origin host. A pull that falls
    back from the mirror to the registry stays inside the testbed and shows
    as more than one copy sent by the origin.
    """
    run = Run(testbed, LABELS["mirror"], clients, blob, work)
    # The image is built once per benchmark, next to the blob it wraps.
    layout = work.parent / "image"
    if (layout / "index.json").exists():
        image = _load_image(layout)
    else:
        image = build_image(blob.path, layout)
    registry = run.track("origin", start_registry(testbed, work.parent / "registry", work))
    reference = push_image(testbed, image, registry, work)
    registry_log = work / "logs" / "registry.log"
    sent_before = blob_bytes_sent(registry_log, image.layer_digest)

    tracker = run.track("tracker", start_tracker(testbed, work))
    run.track("seeder", start_seeder(testbed, work, tracker))
    registry_host = registry.url.removeprefix("http://")
    mirror_host = f"127.0.0.1:{MIRROR_PORT}"
    for host in clients:
        mirror = run.spawn(
            "mirrors", host,
            [str(VENV_BIN / "p2p-mirror"), "--listen", mirror_host, "--tracker", tracker.url,
             "--data-dir", str(run.host_dir(host) / "mirror"), "--upstream", f"{registry_host}={registry.url}",
             "--bittorrent-listen", f"{host.address}:0"],
            stdout=work / "logs" / f"{host.role}-mirror.log",
        )
        wait_ready(testbed, Service("mirror", host, mirror, f"http://{mirror_host}"),
                   lambda response: response.status_code == 200, "/v2/")

    layer_hex = image.layer_digest.partition(":")[2]
    run.copy_path = lambda host: run.host_dir(host) / "image" / layer_hex
    run.expected_sha256 = layer_hex
    run.start_clock()
    watched = []
    for host in clients:
        conf = registries_conf(run.host_dir(host) / "registries.conf", registry_host, mirror_host)
        process = run.spawn(
            "clients", host,
            ["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
             f"docker://{reference}", f"dir:{run.host_dir(host) / 'image'}"],
            stdout=work / "logs" / f"{host.role}.log",
        )
        watched.append((process, _exited_ok(testbed, process)))
    run.watch(watched, timeout)
    result = run.finish(None)
    result.origin_bytes = blob_bytes_sent(registry_log, image.layer_digest) - sent_before
    return result


def _load_image(layout: Path) -> Image:
    index = json.loads((layout / "index.json").read_text())
    manifest_hex = index["manifests"][0]["digest"].partition(":")[2]
    layer = json.loads((layout / "blobs" / "sha256" / manifest_hex).read_text())["layers"][0]
    return Image(layout, layer["digest"], layer["size"])


def run_http(testbed: Testbed, clients: Sequence[Host], blob: Blob, work: Path, timeout: float) -> RunResult:
    """curl on every host at once, each fetching the whole blob from the origin."""
    run = Run(testbed, LABELS["http"], clients, blob, work)
    origin, stats = start_origin(testbed, blob.path.parent, work)
    run.track("origin", origin)
    url = f"{origin.url}/{BLOB_NAME}"

    run.start_clock()
    watched = []
    for host in clients:
        process = run.spawn(
            "clients", host,
            ["curl", "--silent", "--show-error", "--fail", "--max-time", str(int(timeout)),
             "-o", str(run.output(host)), url],
            stdout=work / "logs" / f"{host.role}.log",
        )
        watched.append((process, _exited_ok(testbed, process)))
    run.watch(watched, timeout)
    return run.finish(stats)


def run_bittorrent(testbed: Testbed, clients: Sequence[Host], blob: Blob, work: Path, timeout: float) -> RunResult:
    """opentracker, the origin host seeding with aria2c, and aria2c on every host at once."""
    run = Run(testbed, LABELS["bittorrent"], clients, blob, work)

    # Debian's opentracker serves only the info hashes of its whitelist.
    whitelist = work / "whitelist"
    whitelist.write_text(blob.info_hash + "\n")
    run.track("tracker", start_opentracker(testbed, work, whitelist))

    origin_host = testbed.services["origin"]
    seeding = run.spawn(
        "origin", origin_host,
        ["aria2c", *ARIA2_COMMON, f"--dir={blob.path.parent}", "--bt-seed-unverified=true",
         "--check-integrity=false", "--enable-rpc", f"--rpc-listen-port={ARIA2_RPC_PORT}",
         str(blob.torrent)],
        stdout=work / "logs" / "origin.log",
    )
    _wait_aria2_seeding(testbed, origin_host, seeding)

    # aria2c runs this hook when a host's download completes, before it goes on seeding.
    hook = work / "on-complete.sh"
    hook.write_text('#!/bin/sh\n# aria2c passes the GID, the number of files and the first file path.\ntouch "$3.done"\n')
    hook.chmod(0o755)

    run.start_clock()
    watched = []
    for host in clients:
        output = run.output(host)
        process = run.spawn(
            "clients", host,
            ["aria2c", *ARIA2_COMMON, f"--dir={run.host_dir(host)}", f"--seed-time={SEED_SECONDS / 60:g}",
             f"--on-bt-download-complete={hook}", str(blob.torrent)],
            stdout=work / "logs" / f"{host.role}.log",
        )
        marker = output.with_name(output.name + ".done")
        watched.append((process, marker.exists))
    run.watch(watched, timeout)

    run.result.origin_bytes = _aria2_uploaded(testbed, origin_host)
    result = run.finish(None)
    return result


def _aria2_call(testbed: Testbed, host: Host, method: str, params: list) -> object:
    def call() -> object:
        response = httpx.post(
            f"http://127.0.0.1:{ARIA2_RPC_PORT}/jsonrpc",
            json={"jsonrpc": "2.0", "id": "bench", "method": method, "params": params},
            timeout=5.0,
        )
        response.raise_for_status()
        return response.json()["result"]

    return testbed.call_in(host, call)


def _wait_aria2_seeding(testbed: Testbed, host: Host, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if testbed.poll(process) is not None:
            raise RuntimeError(f"aria2c on the origin exited with {process.returncode} before seeding")
        try:
            active = _aria2_call(testbed, host, "aria2.tellActive", [["status", "seeder"]])
            if any(item.get("seeder") == "true" for item in active):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"aria2c on the origin did not start seeding within {timeout:.0f} s")


def _aria2_uploaded(testbed: Testbed, host: Host) -> int | None:
    """Return the bytes aria2c on `host` uploaded, from its RPC; None if the RPC call fails."""
    try:
        active = _aria2_call(testbed, host, "aria2.tellActive", [["uploadLength"]])
    except httpx.HTTPError:
        return None
    return sum(int(item["uploadLength"]) for item in active)


METHODS = {
    "p2p-fetch": run_p2p_fetch,
    "mirror": run_mirror,
    "http": run_http,
    "bittorrent": run_bittorrent,
}
