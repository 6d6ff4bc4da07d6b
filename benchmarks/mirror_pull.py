"""Time a skopeo pull of the big test image: through p2p-mirror cold and warm, and direct.

    .venv/bin/python -m benchmarks.mirror_pull --runs 5

Everything runs on this machine, inside a network namespace with loopback
alone (root is needed to create it): the distribution registry, a tracker
with a seeder, one p2p-mirror and skopeo. Each run starts a new tracker,
seeder and mirror, so its cold pull includes the seeder's ingest from the
registry. The warm pull repeats the pull through the same mirror, whose cache
then has every blob. The direct pull goes to the registry without a mirror.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.support.cluster import tracker_and_seeder
from tests.support.netns import NetworkNamespace
from tests.support.processes import VENV_BIN, free_port, running
from tests.support.registry import IMAGES, Registry, build_images, push_images, registry_server


def _registries_conf(path: Path, registry: Registry, mirror_host: str | None) -> Path:
    text = f'[[registry]]\nprefix = "{registry.host}"\nlocation = "{registry.host}"\ninsecure = true\n'
    if mirror_host:
        text += f'\n[[registry.mirror]]\nlocation = "{mirror_host}"\ninsecure = true\n'
    path.write_text(text)
    return path


def _pull_seconds(namespace: NetworkNamespace, conf: Path, registry: Registry, destination: Path) -> float:
    """Run one skopeo pull into a new directory; return its wall-clock seconds."""
    shutil.rmtree(destination, ignore_errors=True)
    args = ["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
            f"docker://{registry.host}/{IMAGES['big']}", f"dir:{destination}"]
    started = time.monotonic()
    subprocess.run(namespace.command(args), check=True, capture_output=True, timeout=600)
    return time.monotonic() - started


def _served(mirror_url: str) -> dict[str, float]:
    samples = {}
    for line in httpx.get(f"{mirror_url}/metrics").text.splitlines():
        if line.startswith("p2p_mirror_blobs_served_total{"):
            name, _, value = line.rpartition(" ")
            samples[name.split('"')[1]] = float(value)
    return samples


def run(runs: int, work: Path) -> list[dict[str, float]]:
    namespace = NetworkNamespace(f"p2pbench{os.getpid()}")
    namespace.create()
    results = []
    try:
        with namespace.entered():
            layout = build_images(work / "images")
            with registry_server(namespace, work / "registry") as registry:
                push_images(registry, layout)
                direct_conf = _registries_conf(work / "direct.conf", registry, None)

                for index in range(runs):
                    run_dir = work / f"run{index}"
                    run_dir.mkdir()
                    with ExitStack() as stack:
                        cluster = stack.enter_context(tracker_and_seeder(run_dir))
                        port = free_port()
                        mirror_url = f"http://127.0.0.1:{port}"
                        stack.enter_context(running(
                            namespace.command([
                                str(VENV_BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{port}",
                                "--tracker", cluster.tracker_url, "--data-dir", str(run_dir / "mirror"),
                                "--bittorrent-listen", "127.0.0.1:0",
                                "--upstream", f"{registry.host}={registry.url}",
                            ]),
                            ready_url=f"{mirror_url}/healthz",
                            log_path=run_dir / "mirror.log",
                        ))
                        mirror_conf = _registries_conf(run_dir / "mirror.conf", registry, f"127.0.0.1:{port}")

                        cold = _pull_seconds(namespace, mirror_conf, registry, run_dir / "cold")
                        after_cold = _served(mirror_url)
                        warm = _pull_seconds(namespace, mirror_conf, registry, run_dir / "warm")
                        after_warm = _served(mirror_url)
                        direct = _pull_seconds(namespace, direct_conf, registry, run_dir / "direct")

                    results.append({
                        "cold": cold, "warm": warm, "direct": direct,
                        "cold_from_swarm": after_cold.get("swarm", 0),
                        "warm_from_cache": after_warm.get("cache", 0) - after_cold.get("cache", 0),
                    })
                    print(f"run {index + 1}: cold {cold:.2f} s, warm {warm:.2f} s, direct {direct:.2f} s", flush=True)
    finally:
        namespace.delete()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="number of runs (default 5)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="p2p-mirror-bench-") as directory:
        results = run(options.runs, Path(directory))

    print("\n| run | cold through mirror | warm from cache | direct | blobs from swarm (cold) | blobs from cache (warm) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for index, result in enumerate(results, 1):
        print(f"| {index} | {result['cold']:.2f} s | {result['warm']:.2f} s | {result['direct']:.2f} s "
              f"| {result['cold_from_swarm']:.0f} | {result['warm_from_cache']:.0f} |")
    medians = {key: statistics.median(result[key] for result in results) for key in ("cold", "warm", "direct")}
    print(f"| median | {medians['cold']:.2f} s | {medians['warm']:.2f} s | {medians['direct']:.2f} s | | |")


if __name__ == "__main__":
    main()
