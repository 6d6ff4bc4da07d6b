"""An upstream registry for tests: the CNCF distribution registry and images built offline.

Images are built once per test session with buildah from scratch, with
busybox-static as the only binary, into an OCI layout. skopeo pushes them to
each registry a test starts in three manifest forms: an OCI image manifest, a
Docker schema 2 manifest and a two-platform OCI image index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from tests.support.netns import NetworkNamespace
from tests.support.processes import free_port, running

BUSYBOX = Path("/bin/busybox")

# What `docker run` / `ctr run` of the busybox image prints.
HELLO_MESSAGE = "hello from p2p-fetch"

# The big image's random layer, large enough that a pull takes many pieces.
BIG_LAYER_BYTES = 64 * 1024 * 1024

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ALL_MANIFEST_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]

# Repository and tag of each pushed image, by name used in the tests.
IMAGES = {
    "oci": "library/busybox:oci",
    "docker": "tools/sub/busybox:v2s2",  # several path segments on purpose
    "multi": "library/multi:latest",
    "big": "library/big:latest",
}


class ToolFailed(RuntimeError):
    """buildah, skopeo or the registry exited with an error."""


def run_tool(args: list[str], timeout: float = 300) -> str:
    """Run a command; raise ToolFailed with its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ToolFailed(f"{' '.join(args)} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


# Building images.


@dataclass
class ImageLayout:
    """An OCI image layout directory holding every test image, one tag each."""

    path: Path

    def reference(self, tag: str) -> str:
        return f"oci:{self.path}:{tag}"


class _Buildah:
    """buildah with its own storage under a test directory, so no host state is read or left."""

    def __init__(self, root: Path):
        self.options = [
            "--root", str(root / "storage"),
            "--runroot", str(root / "run"),
            "--storage-driver", "vfs",
        ]

    def __call__(self, *args: str) -> str:
        return run_tool(["buildah", *self.options, *args]).strip()


def build_images(work_dir: Path) -> ImageLayout:
    """Build the test images offline into an OCI layout under `work_dir`.

    Tags: `busybox` (linux/amd64), `busybox-arm64` (a different small layer),
    `multi` (an index of those two) and `big` (the busybox layer and a second
    layer of BIG_LAYER_BYTES random bytes).
    """
    if not BUSYBOX.exists():
        raise ToolFailed(f"{BUSYBOX} not found: install the Debian package busybox-static")
    layout = ImageLayout(work_dir / "layout")
    buildah = _Buildah(work_dir / "buildah")
    files = work_dir / "files"
    files.mkdir(parents=True, exist_ok=True)

    def build(tag: str, arch: str, extra_files: list[tuple[Path, str]], base: str | None = None) -> None:
        # From a base image, buildah adds one layer on top of the base's.
        container = buildah("from", layout.reference(base) if base else "scratch")
        if base is None:
            buildah("copy", container, str(BUSYBOX), "/bin/busybox")
        for source, destination in extra_files:
            buildah("copy", container, str(source), destination)
        buildah(
            "config",
            "--arch", arch,
            "--os", "linux",
            "--cmd", json.dumps(["/bin/busybox", "echo", HELLO_MESSAGE]),
            container,
        )
        buildah("commit", "--format", "oci", "--quiet", container, layout.reference(tag))
        buildah("rm", container)

    platform_file = files / "platform"
    platform_file.write_text("linux/arm64\n")
    random_file = files / "random.bin"
    with open(random_file, "wb") as file:
        for _ in range(BIG_LAYER_BYTES // (1 << 20)):
            file.write(os.urandom(1 << 20))

    build("busybox", "amd64", [])
    build("busybox-arm64", "arm64", [(platform_file, "/etc/platform")])
    build("big", "amd64", [(random_file, "/data/random.bin")], base="busybox")

    buildah("manifest", "create", "multi")
    buildah("manifest", "add", "multi", layout.reference("busybox"))
    buildah("manifest", "add", "multi", layout.reference("busybox-arm64"))
    buildah("manifest", "push", "--all", "--format", "oci", "--quiet", "multi", layout.reference("multi"))

    # vfs storage keeps a full copy of every layer: drop it, the layout is enough.
    buildah("manifest", "rm", "multi")
    shutil.rmtree(work_dir / "buildah", ignore_errors=True)
    random_file.unlink()
    return layout


# The registry.


@dataclass
class Registry:
    """A running distribution registry inside a network namespace."""

    url: str
    host: str  # HOST:PORT, as in image references
    log_path: Path
    namespace: NetworkNamespace
    credentials: tuple[str, str] | None = None
    pushed: dict[str, str] = field(default_factory=dict)

    def auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth(*self.credentials) if self.credentials else None

    def manifest(self, image: str, accept: list[str] | None = None) -> httpx.Response:
        """GET a manifest directly from the registry (the caller must be inside the namespace)."""
        repository, _, tag = IMAGES[image].rpartition(":")
        headers = [("Accept", media_type) for media_type in accept or ALL_MANIFEST_TYPES]
        response = httpx.get(f"{self.url}/v2/{repository}/manifests/{tag}", headers=headers, auth=self.auth())
        response.raise_for_status()
        return response

    def layer_digests(self, image: str) -> list[str]:
        """Return the layer digests of a single-platform image."""
        return [layer["digest"] for layer in self.manifest(image).json()["layers"]]

    def config_digest(self, image: str) -> str:
        return self.manifest(image).json()["config"]["digest"]

    def _blob_log_lines(self, digest: str, method: str) -> list[re.Match]:
        pattern = re.compile(rf'"{method} /v2/[^ ]+/blobs/{re.escape(digest)} HTTP/[0-9.]+" (2\d\d) (\d+) ')
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [match for match in map(pattern.search, lines) if match]

    def blob_requests(self, digest: str, method: str = "GET") -> int:
        """Count the blob requests for `digest` that the registry returned 2xx for, from its access log."""
        return len(self._blob_log_lines(digest, method))

    def blob_bytes_sent(self, digest: str) -> int:
        """Sum the body bytes of every successful GET of `digest`, ranged ones included, from the access log."""
        return sum(int(match.group(2)) for match in self._blob_log_lines(digest, "GET"))

    def blob_size(self, image: str, digest: str) -> int:
        repository = IMAGES[image].rpartition(":")[0]
        response = httpx.head(f"{self.url}/v2/{repository}/blobs/{digest}", auth=self.auth())
        response.raise_for_status()
        return int(response.headers["Content-Length"])


def _write_config(path: Path, storage: Path, address: str, htpasswd: Path | None) -> None:
    # The packaged /etc/docker/registry/config.yml turns on htpasswd auth, so
    # every test registry gets a config of its own. JSON is valid YAML.
    config: dict = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": address},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "p2p-test", "path": str(htpasswd)}}
    path.write_text(json.dumps(config, indent=2))


@contextmanager
def registry_server(
    namespace: NetworkNamespace,
    work_dir: Path,
    credentials: tuple[str, str] | None = None,
) -> Iterator[Registry]:
    """Run a registry on 127.0.0.1 inside `namespace`; with `credentials`, behind htpasswd basic auth.

    The calling thread must be inside `namespace` so that the readiness
    check reaches the registry.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    htpasswd = None
    if credentials is not None:
        user, password = credentials
        htpasswd = work_dir / "htpasswd"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
        htpasswd.write_text(f"{user}:{hashed}\n")

    # free_port probes the calling thread's namespace, which is `namespace`.
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = work_dir / "config.yml"
    _write_config(config, work_dir / "storage", address, htpasswd)
    log_path = work_dir / "registry.log"

    # Under auth /v2/ returns 401, so readiness is checked on the root path
    # `/`, which distribution serves with 200 and no auth.
    with running(
        namespace.command(["docker-registry", "serve", str(config)]),
        ready_url=f"http://{address}/",
        log_path=log_path,
    ):
        yield Registry(
            url=f"http://{address}",
            host=address,
            log_path=log_path,
            namespace=namespace,
            credentials=credentials,
        )


def push_images(registry: Registry, layout: ImageLayout) -> None:
    """Push every test image to `registry` with skopeo, run inside the registry's namespace."""
    credentials = ["--dest-creds", ":".join(registry.credentials)] if registry.credentials else []

    def copy(source_tag: str, image: str, *options: str) -> None:
        destination = f"docker://{registry.host}/{IMAGES[image]}"
        run_tool(
            registry.namespace.command(
                ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *credentials, *options,
                 layout.reference(source_tag), destination]
            )
        )
        registry.pushed[image] = destination

    copy("busybox", "oci", "--format", "oci")
    copy("busybox", "docker", "--format", "v2s2")
    copy("multi", "multi", "--all")
    copy("big", "big", "--format", "oci")
