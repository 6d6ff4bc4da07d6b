"""An image whose one layer carries the blob, and the registry that serves it from the origin host."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.services import READY_TIMEOUT, Service, wait_ready
from benchmarks.testbed import Testbed, TestbedError

REGISTRY_PORT = 5000
REPOSITORY = "bench/blob"
TAG = "latest"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Image:
    """An OCI image layout on disk with one uncompressed layer: a tar of the blob."""

    layout: Path
    layer_digest: str  # sha256:<hex>
    layer_size: int


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(4 * 1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_image(blob: Path, layout: Path) -> Image:
    """Write an OCI image layout whose single layer is an uncompressed tar holding `blob`."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    # Uncompressed, so the layer is as large as the blob (plus the tar headers)
    # and random bytes do not make a compressor work for nothing.
    layer = layout / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(blob, arcname=blob.name)
    layer_hex = _sha256_file(layer)
    layer_size = layer.stat().st_size
    layer.rename(blobs / layer_hex)
    layer_digest = f"sha256:{layer_hex}"

    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {},
    }
    config_digest, config_size = _write_blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _write_blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": TAG},
        }],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return Image(layout, layer_digest, layer_size)


def start_registry(testbed: Testbed, storage: Path, work: Path) -> Service:
    """Run the CNCF distribution registry on the origin host, storing under `storage`, without auth."""
    host = testbed.services["origin"]
    address = f"{host.address}:{REGISTRY_PORT}"
    config = work / "registry.yml"
    # The packaged /etc/docker/registry/config.yml turns on htpasswd auth, so
    # the run gets a config of its own. JSON is valid YAML.
    config.write_text(json.dumps({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}},
        "http": {"addr": address},
    }))
    process = testbed.spawn(host, ["docker-registry", "serve", str(config)], stdout=work / "logs" / "registry.log")
    service = Service("registry", host, process, f"http://{address}")
    wait_ready(testbed, service, lambda response: response.status_code == 200, "/v2/")
    return service


def push_image(testbed: Testbed, image: Image, registry: Service, work: Path) -> str:
    """Push the image with skopeo from the origin host; return its reference."""
    reference = f"{registry.url.removeprefix('http://')}/{REPOSITORY}:{TAG}"
    # Without --preserve-digests skopeo 1.9 gzips the uncompressed layer on
    # the way to the registry, so the pushed layer would have another digest.
    process = testbed.spawn(
        registry.host,
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
         f"oci:{image.layout}:{TAG}", f"docker://{reference}"],
        stdout=work / "logs" / "push.log",
    )
    code = testbed.wait(process, timeout=max(READY_TIMEOUT, 600))
    if code != 0:
        raise TestbedError(f"skopeo push of {reference} exited with {code}; see {work / 'logs' / 'push.log'}")
    return reference


def blob_bytes_sent(log: Path, digest: str) -> int:
    """Sum the body bytes of the successful GETs of `digest`, ranged ones included, from the registry's access log."""
    pattern = re.compile(rf'"GET /v2/[^ ]+/blobs/{re.escape(digest)} HTTP/[0-9.]+" 2\d\d (\d+) ')
    return sum(int(match.group(1)) for match in map(pattern.search, log.read_text(errors="replace").splitlines())
               if match)


def registries_conf(path: Path, registry_host: str, mirror_host: str) -> Path:
    """Write a registries.conf that sends pulls from the registry to the host's p2p-mirror first."""
    path.write_text(
        f'[[registry]]\nprefix = "{registry_host}"\nlocation = "{registry_host}"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror_host}"\ninsecure = true\n'
    )
    return path
