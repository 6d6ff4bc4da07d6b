"""Fixtures of the image tests: the image built by `make image`'s script, and buildah containers.

The build, and every container a test starts from the image, run in network
namespaces with loopback alone, so nothing in them reaches a registry or a
package index. Only debootstrap (Debian's archive) and the wheel step (the
Python package index) use the network, on the host, and both are cached
under build/image between runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.netns import NamespaceUnavailable, NetworkNamespace

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "deploy" / "image" / "build.sh"
TEST_IMAGE = "localhost/p2p-fetch:test"

# A cold build runs debootstrap (85 s on a 2-core machine) before the image
# build itself (20 s there).
BUILD_TIMEOUT = 900

REQUIRED_TOOLS = ("buildah", "debootstrap", "nsenter", "ip")


def _skip_reason() -> str | None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools {', '.join(missing)}: install the Debian packages listed in .ci/run"
    if os.geteuid() != 0:
        return "debootstrap and network namespaces need root"
    return None


def run_tool(
    args: list[str], timeout: float = 120, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure show its output in the test's error."""
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def image() -> str:
    """The image built by deploy/image/build.sh from a debootstrap base, tagged TEST_IMAGE."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    run_tool([str(BUILD_SCRIPT)], timeout=BUILD_TIMEOUT, env={"IMAGE": TEST_IMAGE, "PYTHON": sys.executable})
    return TEST_IMAGE


@pytest.fixture(scope="module")
def netns() -> Iterator[NetworkNamespace]:
    """A namespace with loopback alone that the test thread is inside of for the whole module."""
    namespace = NetworkNamespace(f"p2pimage{os.getpid()}")
    try:
        namespace.create()
    except NamespaceUnavailable as error:
        pytest.skip(f"network namespaces are not allowed here ({error})")
    try:
        with namespace.entered():
            yield namespace
    finally:
        namespace.delete()


@pytest.fixture
def new_container(image: str) -> Iterator[Callable[[], str]]:
    """Create buildah working containers from the image; remove them after the test."""
    names: list[str] = []

    def create() -> str:
        name = f"p2p-image-test-{uuid.uuid4().hex[:8]}"
        run_tool(["buildah", "from", "--quiet", "--pull=never", "--name", name, image])
        names.append(name)
        return name

    yield create
    for name in names:
        run_tool(["buildah", "rm", name], check=False)


def container_command(netns: NetworkNamespace, container: str, args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Return the command that runs `args` in `container` on the namespace's network."""
    options = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return netns.command(["buildah", "run", "--network", "host", *options, container, "--", *args])
