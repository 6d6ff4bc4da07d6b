"""Real registry clients pull through p2p-mirror: skopeo, containerd's ctr, dockerd where it runs.

Each client runs inside the test's namespace with loopback alone (see
conftest.py), so a client that gives up on the mirror and falls back to the
registry named in the image reference reaches only the test registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.netns import NetworkNamespace
from tests.support.processes import free_port, running
from tests.support.registry import HELLO_MESSAGE, IMAGES, OCI_INDEX, Registry, run_tool


def registries_conf(path: Path, registry: Registry, mirror_host: str) -> Path:
    """Write a registries.conf that sends pulls from `registry` to the mirror first."""
    path.write_text(
        f"""\
[[registry]]
prefix = "{registry.host}"
location = "{registry.host}"
insecure = true

[[registry.mirror]]
location = "{mirror_host}"
insecure = true
"""
    )
    return path


def skopeo_copy(netns: NetworkNamespace, conf: Path, source: str, destination: str, *options: str) -> None:
    run_tool(
        netns.command(
            ["skopeo", "--registries-conf", str(conf), "--insecure-policy", "copy", "--quiet",
             *options, source, destination]
        ),
        timeout=300,
    )


@pytest.mark.parametrize("image", ["oci", "docker"])
def test_skopeo_pulls_through_mirror(image, registry: Registry, netns, start_mirror, tmp_path):
    mirror = start_mirror({registry.host: registry.url})
    conf = registries_conf(tmp_path / "registries.conf", registry, mirror.host)
    manifest = registry.manifest(image).json()
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]

    skopeo_copy(netns, conf, f"docker://{registry.host}/{IMAGES[image]}", f"dir:{tmp_path / 'pulled'}")

    for digest in digests:
        pulled = tmp_path / "pulled" / digest.partition(":")[2]
        assert pulled.is_file(), digest
        assert "sha256:" + hashlib.sha256(pulled.read_bytes()).hexdigest() == digest
    served = mirror.metrics()
    assert sum(served[f'p2p_mirror_blobs_served_total{{source="{source}"}}'] for source in ("cache", "swarm", "upstream")) == len(digests)


def _served_blobs(mirror) -> float:
    metrics = mirror.metrics()
    return sum(metrics[f'p2p_mirror_blobs_served_total{{source="{source}"}}'] for source in ("cache", "swarm", "upstream"))


def test_skopeo_pulls_multi_arch_index(registry: Registry, netns, start_mirror, tmp_path):
    mirror = start_mirror({registry.host: registry.url})
    conf = registries_conf(tmp_path / "registries.conf", registry, mirror.host)
    index = registry.manifest("multi")
    platforms = [entry["platform"]["architecture"] for entry in index.json()["manifests"]]
    destination = tmp_path / "layout"

    skopeo_copy(netns, conf, f"docker://{registry.host}/{IMAGES['multi']}", f"oci:{destination}:multi", "--all")

    assert platforms == ["amd64", "arm64"]
    top = json.loads((destination / "index.json").read_text())["manifests"][0]
    assert top["mediaType"] == OCI_INDEX
    assert top["digest"] == index.headers["Docker-Content-Digest"]
    # Two configs and two distinct layers, one of each per platform.
    assert _served_blobs(mirror) == 4


# containerd.


@pytest.fixture(scope="package")
def containerd(netns: NetworkNamespace):
    """A containerd daemon of the test's own (root, state and socket in a temporary directory)."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd and ctr are not installed: install the Debian package containerd")
    # A short directory: the socket path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="p2pctrd"))
    socket = directory / "containerd.sock"
    config = directory / "config.toml"
    config.write_text(
        f"""\
version = 2
root = "{directory / 'root'}"
state = "{directory / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"
"""
    )
    try:
        with running(netns.command(["containerd", "--config", str(config)]), log_path=directory / "containerd.log"):
            deadline = time.monotonic() + 20
            while not socket.exists():
                if time.monotonic() > deadline:
                    pytest.fail(f"containerd did not open {socket}: {(directory / 'containerd.log').read_text()[-2000:]}")
                time.sleep(0.1)
            yield socket
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def hosts_toml(hosts_dir: Path, registry: Registry, mirror_url: str) -> Path:
    """Write DIR/<registry host>/hosts.toml that resolves and pulls through the mirror first."""
    directory = hosts_dir / registry.host
    directory.mkdir(parents=True)
    path = directory / "hosts.toml"
    path.write_text(
        f"""\
server = "{registry.url}"

[host."{mirror_url}"]
  capabilities = ["pull", "resolve"]
"""
    )
    return path


def ctr(socket: Path, netns: NetworkNamespace, *args: str, timeout: float = 300) -> str:
    return run_tool(netns.command(["ctr", "--address", str(socket), "--namespace", "p2ptest", *args]), timeout=timeout)


def test_ctr_pulls_and_runs_through_mirror(registry: Registry, netns, containerd, start_mirror, tmp_path):
    # Without ?ns= the mirror would pick its default upstream, where nothing
    # listens: the pull succeeds only if containerd's ?ns= picks the registry.
    dead = f"http://127.0.0.1:{free_port()}"
    mirror = start_mirror({"dead.test": dead, registry.host: registry.url})
    hosts_toml(tmp_path / "certs.d", registry, mirror.url)
    reference = f"{registry.host}/{IMAGES['docker']}"

    ctr(containerd, netns, "images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), reference)

    assert _served_blobs(mirror) == 2
    output = ctr(containerd, netns, "run", "--rm", reference, f"p2p-{os.getpid()}", timeout=120)
    assert output.strip() == HELLO_MESSAGE
    ctr(containerd, netns, "images", "rm", reference)


# dockerd.


@pytest.fixture
def dockerd(netns: NetworkNamespace, start_mirror, registry: Registry):
    """A dockerd of the test's own whose registry mirror is a p2p-mirror for docker.io; yields its socket."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd is not installed (Debian package docker.io); the docker pull test needs it")
    # dockerd sends only Docker Hub pulls to a mirror, without ?ns=: docker.io
    # is the mirror's default upstream, served by the test registry.
    mirror = start_mirror({"docker.io": registry.url})
    directory = Path(tempfile.mkdtemp(prefix="p2pdkr"))
    socket = directory / "docker.sock"
    config = directory / "daemon.json"
    config.write_text(json.dumps({"registry-mirrors": [mirror.url]}, indent=2) + "\n")
    args = [
        "dockerd",
        "--config-file", str(config),
        "--host", f"unix://{socket}",
        "--data-root", str(directory / "data"),
        "--exec-root", str(directory / "exec"),
        "--pidfile", str(directory / "docker.pid"),
        # The namespace has loopback alone: no bridge, no NAT rules.
        "--bridge", "none",
        "--iptables=false",
        "--ip6tables=false",
    ]
    try:
        with running(netns.command(args), log_path=directory / "dockerd.log") as process:
            deadline = time.monotonic() + 60
            while subprocess.run(["docker", "--host", f"unix://{socket}", "version"], capture_output=True).returncode != 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (directory / "dockerd.log").read_text(errors="replace")[-3000:]
                    pytest.skip(f"dockerd cannot run here: {log}")
                time.sleep(0.5)
            yield socket, mirror
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_docker_pulls_and_runs_through_mirror(dockerd, netns):
    socket, mirror = dockerd
    image = IMAGES["oci"].removeprefix("library/")

    run_tool(netns.command(["docker", "--host", f"unix://{socket}", "pull", image]), timeout=300)

    assert _served_blobs(mirror) == 2
    output = run_tool(
        netns.command(["docker", "--host", f"unix://{socket}", "run", "--rm", "--network", "none", image]),
        timeout=120,
    )
    assert output.strip() == HELLO_MESSAGE
