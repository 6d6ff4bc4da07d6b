"""The image half of `make demo`: two hosts' p2p-mirror pull one image through the swarm.

Everything runs in a network namespace that has loopback alone: the CNCF
distribution registry as the upstream, the tracker with its seeder, two
p2p-mirror daemons with separate caches, and skopeo as the client. skopeo
falls back to the upstream named in the image reference when a mirror fails,
so outside such a namespace a fallback could reach a real registry.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from core.units import format_size

BIN = Path(sys.executable).parent
BUSYBOX = Path("/bin/busybox")
LAYER_BYTES = 40 * 1024 * 1024
REPOSITORY = "demo/app"
REQUIRED_TOOLS = ("ip", "nsenter", "docker-registry", "skopeo", "buildah")

# From <sched.h>: setns() moves the calling thread into a network namespace.
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class DemoSkipped(Exception):
    """The image demo cannot run on this machine; the message gives the reason."""


def missing_prerequisite() -> str | None:
    """Return why the image demo cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian packages: iproute2 util-linux docker-registry skopeo buildah)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} not found (Debian package busybox-static)"
    return None


def run(args: list[str], timeout: float = 300) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {result.returncode}: {result.stderr.strip()[-1500:]}")
    return result.stdout


def build_image(work: Path) -> str:
    """Build a busybox image with a random layer into an OCI layout; return its reference."""
    storage = ["--root", str(work / "buildah" / "storage"), "--runroot", str(work / "buildah" / "run"),
               "--storage-driver", "vfs"]
    random_file = work / "random.bin"
    with open(random_file, "wb") as file:
        for _ in range(LAYER_BYTES // (1 << 20)):
            file.write(os.urandom(1 << 20))

    reference = f"oci:{work / 'layout'}:demo"
    container = run(["buildah", *storage, "from", "scratch"]).strip()
    run(["buildah", *storage, "copy", container, str(BUSYBOX), "/bin/busybox"])
    run(["buildah", *storage, "copy", container, str(random_file), "/data/random.bin"])
    run(["buildah", *storage, "config", "--cmd", json.dumps(["/bin/busybox", "echo", "hello from p2p-fetch"]),
         container])
    run(["buildah", *storage, "commit", "--format", "oci", "--quiet", container, reference])
    run(["buildah", *storage, "rm", container])
    shutil.rmtree(work / "buildah", ignore_errors=True)
    random_file.unlink()
    return reference


@contextmanager
def loopback_only_namespace(name: str) -> Iterator[None]:
    """Create a namespace with only `lo`, move this thread into it, and remove it at the end.

    Child processes started inside the block inherit the namespace.
    """
    run(["ip", "netns", "add", name])
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise DemoSkipped(f"setns into {name} failed: {os.strerror(ctypes.get_errno())}")
        os.close(target)
        try:
            yield
        finally:
            _libc.setns(original, _CLONE_NEWNET)
    finally:
        os.close(original)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def started(args: list[str], log: Path, ready_url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server for the block, wait until `ready_url` responds, stop it by its PID."""
    with open(log, "wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited with {process.returncode}; see {log}")
                try:
                    if httpx.get(ready_url, timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} did not respond within 30 s; see {log}")
                time.sleep(0.2)
            yield
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def registry_blob_bytes(log: Path) -> int:
    """Sum the body bytes of the registry's successful blob GETs, from its access log."""
    pattern = re.compile(r'"GET /v2/[^ ]+/blobs/sha256:[0-9a-f]{64} HTTP/[0-9.]+" 2\d\d (\d+) ')
    return sum(int(match.group(1)) for match in map(pattern.search, log.read_text(errors="replace").splitlines())
               if match)


def mirror_bytes_by_source(mirror_url: str) -> dict[str, float]:
    text = httpx.get(f"{mirror_url}/metrics", timeout=5).text
    pattern = re.compile(r'^p2p_mirror_blob_bytes_served_total\{source="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)
    return {source: float(value) for source, value in pattern.findall(text)}


def write_registries_conf(path: Path, registry: str, mirror: str) -> None:
    path.write_text(
        f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n'
    )


def run_image_demo(work: Path) -> None:
    """Pull one image on two hosts at once through their mirrors; print what the registry sent."""
    reason = missing_prerequisite()
    if reason:
        raise DemoSkipped(reason)

    work.mkdir(parents=True, exist_ok=True)
    print("building an image with busybox and a random 40 MiB layer (buildah, offline) ...")
    image = build_image(work)

    with loopback_only_namespace(f"p2pdemo{os.getpid()}"), ExitStack() as stack:
        registry_port, tracker_port = free_port(), free_port()
        registry = f"127.0.0.1:{registry_port}"
        config = work / "registry.json"
        config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(work / "registry")}},
            "http": {"addr": registry},
        }))
        stack.enter_context(started(["docker-registry", "serve", str(config)], work / "registry.log",
                                    f"http://{registry}/"))
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--format", "oci", image,
             f"docker://{registry}/{REPOSITORY}:latest"])
        manifest = httpx.get(
            f"http://{registry}/v2/{REPOSITORY}/manifests/latest",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10,
        ).json()
        image_bytes = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])

        tracker_url = f"http://127.0.0.1:{tracker_port}"
        stack.enter_context(started(
            [str(BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{tracker_port}", "--data-dir", str(work / "tracker"),
             "--embedded-seeder"],
            work / "tracker.log", f"{tracker_url}/healthz", env={"P2P_SEEDER_BITTORRENT_LISTEN": "127.0.0.1:0"},
        ))

        mirrors = []
        for host in (1, 2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(started(
                [str(BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{port}", "--tracker", tracker_url,
                 "--data-dir", str(work / f"mirror{host}"), "--upstream", f"{registry}=http://{registry}",
                 "--bittorrent-listen", "127.0.0.1:0"],
                work / f"mirror{host}.log", f"{url}/healthz",
            ))
            conf = work / f"registries{host}.conf"
            write_registries_conf(conf, registry, f"127.0.0.1:{port}")
            mirrors.append((host, url, conf))

        print(f"two hosts pull {registry}/{REPOSITORY}:latest with skopeo through their p2p-mirror at once ...")
        began = time.monotonic()
        pulls = [
            (host, subprocess.Popen(
                ["skopeo", "copy", "--quiet", "--registries-conf", str(conf), "--src-tls-verify=false",
                 f"docker://{registry}/{REPOSITORY}:latest", f"oci:{work / f'pulled{host}'}:latest"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            ))
            for host, _, conf in mirrors
        ]
        failures = 0
        for host, process in pulls:
            _, stderr = process.communicate(timeout=600)
            if process.returncode != 0:
                failures += 1
                print(f"host{host}: skopeo failed: {stderr.decode(errors='replace').strip()[-500:]}")
            else:
                print(f"host{host}: image pulled and verified by skopeo")
        elapsed = time.monotonic() - began

        upstream_bytes = registry_blob_bytes(work / "registry.log")
        print()
        print(f"image blobs:            {format_size(image_bytes)}")
        print(f"registry sent to pulls: {format_size(upstream_bytes)} ({upstream_bytes / image_bytes:.2f} copies)")
        for host, url, _ in mirrors:
            sources = mirror_bytes_by_source(url)
            described = ", ".join(f"{format_size(value)} from {source}" for source, value in sorted(sources.items()))
            print(f"host{host} mirror served: {described or 'nothing'}")
        print(f"both pulls done in {elapsed:.1f} s")
        if failures:
            raise SystemExit(f"image demo failed: {failures} of 2 pulls failed; logs in {work}")
