"""Fixtures of the mirror tests: a namespace with loopback alone, registries, images and mirrors.

Every process of these tests (registries, tracker, seeder, mirrors, registry
clients) runs inside one network namespace that has only `lo`. The test
thread enters it too, so the tests reach every process on 127.0.0.1, while a
registry client's fallback to a real registry finds no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.netns import NamespaceUnavailable, NetworkNamespace
from tests.support.processes import VENV_BIN, free_port, running, stop
from tests.support.registry import ImageLayout, Registry, build_images, push_images, registry_server

REQUIRED_TOOLS = ("buildah", "skopeo", "docker-registry", "nsenter", "ip")


def _missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@pytest.fixture(scope="session")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> ImageLayout:
    """The test images, built once per session."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"missing tools {', '.join(missing)}: install the Debian packages listed in .ci/run")
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="package")
def netns() -> Iterator[NetworkNamespace]:
    """A namespace with loopback alone that the test thread is inside of for the whole package."""
    namespace = NetworkNamespace(f"p2pmirror{os.getpid()}")
    try:
        namespace.create()
    except NamespaceUnavailable as error:
        pytest.skip(f"network namespaces are not allowed here ({error}); registry clients must not run outside one")
    try:
        with namespace.entered():
            yield namespace
    finally:
        namespace.delete()


@pytest.fixture(scope="package")
def registry(netns: NetworkNamespace, image_layout: ImageLayout, tmp_path_factory) -> Iterator[Registry]:
    """An upstream registry without auth, with every test image pushed."""
    with registry_server(netns, tmp_path_factory.mktemp("registry")) as server:
        push_images(server, image_layout)
        yield server


@pytest.fixture(scope="package")
def auth_registry(netns: NetworkNamespace, image_layout: ImageLayout, tmp_path_factory) -> Iterator[Registry]:
    """An upstream registry behind htpasswd basic auth, with every test image pushed."""
    with registry_server(netns, tmp_path_factory.mktemp("auth-registry"), credentials=("alice", "wonderland")) as server:
        push_images(server, image_layout)
        yield server


@dataclass
class MirrorProcess:
    """A running p2p-mirror."""

    url: str
    host: str  # HOST:PORT, as registry clients name a mirror
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def stop(self) -> None:
        """Stop the mirror now instead of at the end of the test; stopping twice is safe."""
        stop(self.process)

    def metrics(self) -> dict[str, float]:
        """Return the mirror's Prometheus samples by `name{labels}`."""
        samples = {}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


StartMirror = Callable[..., MirrorProcess]


@pytest.fixture
def start_mirror(netns: NetworkNamespace, tmp_path: Path) -> Iterator[StartMirror]:
    """Start p2p-mirror processes inside the namespace; all stop at the end of the test."""
    with ExitStack() as stack:
        count = 0

        def start(
            upstreams: dict[str, str],
            tracker: str = "",
            *extra: str,
            env: dict[str, str] | None = None,
            data_dir: Path | None = None,
        ) -> MirrorProcess:
            nonlocal count
            count += 1
            port = free_port()
            data_dir = data_dir or tmp_path / f"mirror{count}"
            log_path = tmp_path / f"mirror{count}.log"
            args = [
                str(VENV_BIN / "p2p-mirror"),
                "--listen", f"127.0.0.1:{port}",
                "--tracker", tracker,
                "--data-dir", str(data_dir),
                "--bittorrent-listen", "127.0.0.1:0",
                "--log-level", "DEBUG",
            ]
            for registry_host, url in upstreams.items():
                args += ["--upstream", f"{registry_host}={url}"]
            process = stack.enter_context(
                running(
                    netns.command([*args, *extra]),
                    ready_url=f"http://127.0.0.1:{port}/healthz",
                    log_path=log_path,
                    env=env,
                    # Starting libtorrent and uvicorn takes about a second, but
                    # much longer on a loaded machine.
                    ready_timeout=60,
                )
            )
            return MirrorProcess(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", data_dir, log_path, process)

        yield start
