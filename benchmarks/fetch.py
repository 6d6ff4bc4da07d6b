"""Peak memory and time of one `p2p-fetch` on loopback, beside a bare libtorrent pair and curl.

    .venv/bin/python -m benchmarks.fetch --sizes 64MiB,1GiB

Each size runs four methods in one run on one machine. p2p-fetch cold has the
seeder ingest from the origin first, and p2p-fetch warm finds the file in the
seeder's cache. Two bare libtorrent sessions with no tracker, one seeding and
one downloading, connect directly. curl fetches from the same local origin. Peak RSS comes from GNU
time's maximum resident set size of each process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cli.demo_origin import CountingOrigin
from core.units import format_size, parse_size
from tests.support.torrents import write_random_file

BIN = Path(sys.executable).parent

# A bare pair: libtorrent's defaults, except uTP (it collapses on loopback)
# and the discovery services that would look beyond this machine.
BARE_PAIR_SCRIPT = r"""
import sys, time, libtorrent as lt
torrent, seed_dir, leech_dir = sys.argv[1:4]
settings = {"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False,
            "enable_outgoing_utp": False, "enable_incoming_utp": False}
seeder, leecher = lt.session(settings), lt.session(settings)
info = lt.torrent_info(torrent)
seed = lt.add_torrent_params(); seed.ti = info; seed.save_path = seed_dir; seed.flags |= lt.torrent_flags.seed_mode
leech = lt.add_torrent_params(); leech.ti = lt.torrent_info(torrent); leech.save_path = leech_dir
seeder.add_torrent(seed)
handle = leecher.add_torrent(leech)
started = time.monotonic()
handle.connect_peer(("127.0.0.1", seeder.listen_port()))
while not handle.status().is_seeding:
    if time.monotonic() - started > 600:
        sys.exit("bare pair timed out")
    time.sleep(0.05)
print(f"{time.monotonic() - started:.3f}")
"""


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


def timed(args: list[str]) -> tuple[float, float, str]:
    """Run `args` under GNU time; return wall seconds, peak RSS in MiB, and stdout."""
    report = tempfile.NamedTemporaryFile(suffix=".time", delete=False)
    report.close()
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M", *args],
                            capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    peak_kib = int(Path(report.name).read_text().split()[-1])
    os.unlink(report.name)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {result.returncode}: {result.stderr[-800:]}")
    return elapsed, peak_kib / 1024, result.stdout


def make_torrent(path: Path) -> Path:
    import libtorrent as lt

    storage = lt.file_storage()
    lt.add_files(storage, str(path))
    creator = lt.create_torrent(storage, 1 << 20, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(path.parent))
    torrent = path.with_suffix(".torrent")
    torrent.write_bytes(lt.bencode(creator.generate()))
    return torrent


def measure(size: int, work: Path) -> list[tuple[str, float, float | None, bool]]:
    """Return (method, seconds, peak RSS MiB or None, correct) for one size."""
    source_dir = work / "origin"
    source_dir.mkdir()
    source = source_dir / "blob.bin"
    digest = write_random_file(source, size)
    rows = []

    origin = CountingOrigin(source)
    origin.start()
    port = free_port()
    tracker_url = f"http://127.0.0.1:{port}"
    tracker = subprocess.Popen(
        [str(BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(work / "tracker"),
         "--embedded-seeder", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "P2P_SEEDER_BITTORRENT_LISTEN": "127.0.0.1:0"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{tracker_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the tracker did not start")
            time.sleep(0.2)

        for label in ("p2p-fetch, cold (ingest included)", "p2p-fetch, warm (seeder has the file)"):
            output = work / f"out-{len(rows)}.bin"
            seconds, peak, _ = timed([str(BIN / "p2p-fetch"), origin.url, "-o", str(output), "--tracker", tracker_url,
                                      "--no-mirror", "--listen", "127.0.0.1:0", "--quiet", "--timeout", "1200"])
            rows.append((label, seconds, peak, sha256_of(output) == digest))
            output.unlink()
    finally:
        tracker.terminate()
        tracker.wait(30)

    torrent = make_torrent(source)
    leech_dir = work / "leech"
    leech_dir.mkdir()
    _, peak, stdout = timed([sys.executable, "-c", BARE_PAIR_SCRIPT, str(torrent), str(source_dir), str(leech_dir)])
    rows.append(("bare libtorrent pair, no tracker (transfer only)", float(stdout.strip()), peak,
                 sha256_of(leech_dir / source.name) == digest))

    output = work / "curl.bin"
    seconds, peak, _ = timed(["curl", "-sS", "-o", str(output), origin.url])
    rows.append(("curl from the origin", seconds, peak, sha256_of(output) == digest))
    origin.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64MiB,1GiB", help="comma-separated file sizes, e.g. 64MiB,1GiB")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    arguments = parser.parse_args()

    print("| size | method | seconds | peak RSS | correct |")
    print("| --- | --- | --- | --- | --- |")
    for text in arguments.sizes.split(","):
        size = parse_size(text.strip(), "size")
        work = Path(tempfile.mkdtemp(prefix="p2p-bench-", dir=arguments.work_dir))
        try:
            for method, seconds, peak, correct in measure(size, work):
                rss = f"{peak:.1f} MiB" if peak is not None else "n/a"
                print(f"| {format_size(size)} | {method} | {seconds:.2f} | {rss} | {'yes' if correct else 'NO'} |",
                      flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
