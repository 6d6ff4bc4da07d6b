"""An upstream with htpasswd basic auth: the mirror passes credentials on and never serves a refused client."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx

from tests.mirror.test_clients import registries_conf, skopeo_copy
from tests.support.registry import IMAGES, Registry


def _blob_url(mirror_url: str, image: str, digest: str) -> str:
    repository = IMAGES[image].rpartition(":")[0]
    return f"{mirror_url}/v2/{repository}/blobs/{digest}"


def test_ping_returns_upstream_challenge(auth_registry: Registry, start_mirror):
    mirror = start_mirror({auth_registry.host: auth_registry.url})

    response = httpx.get(f"{mirror.url}/v2/")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="p2p-test"'


def auth_file(path, hosts: list[str], user: str, password: str):
    """Write a containers auth.json with the same credentials for each host."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token} for host in hosts}}))
    return path


def test_skopeo_with_credentials_pulls(auth_registry: Registry, netns, start_mirror, tmp_path):
    # skopeo 1.9 sends --src-creds only to the registry itself; for a mirror
    # it looks up the credentials of the mirror's host in the auth file.
    mirror = start_mirror({auth_registry.host: auth_registry.url})
    conf = registries_conf(tmp_path / "registries.conf", auth_registry, mirror.host)
    credentials = auth_file(tmp_path / "auth.json", [mirror.host, auth_registry.host], "alice", "wonderland")
    layer = auth_registry.layer_digests("oci")[0]

    skopeo_copy(
        netns, conf, f"docker://{auth_registry.host}/{IMAGES['oci']}", f"dir:{tmp_path / 'pulled'}",
        "--authfile", str(credentials),
    )

    pulled = (tmp_path / "pulled" / layer.partition(":")[2]).read_bytes()
    assert "sha256:" + hashlib.sha256(pulled).hexdigest() == layer
    assert mirror.metrics()['p2p_mirror_blobs_served_total{source="upstream"}'] == 2


def test_client_without_credentials_gets_no_bytes(auth_registry: Registry, start_mirror):
    mirror = start_mirror({auth_registry.host: auth_registry.url})
    digest = auth_registry.layer_digests("oci")[0]
    url = _blob_url(mirror.url, "oci", digest)
    blob = httpx.get(url, auth=auth_registry.auth()).content
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest

    # The blob is now in the mirror's cache; the mirror must still refuse.
    for auth in (None, httpx.BasicAuth("alice", "wrong-password"), httpx.BasicAuth("mallory", "wonderland")):
        response = httpx.get(url, auth=auth)

        assert response.status_code == 401, auth
        assert response.headers["WWW-Authenticate"] == 'Basic realm="p2p-test"', auth
        assert response.json()["errors"][0]["code"] == "UNAUTHORIZED", auth
        assert blob[:64] not in response.content, auth

    ranged = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 401
    assert mirror.metrics()['p2p_mirror_blobs_served_total{source="cache"}'] == 0


def test_manifest_without_credentials_gets_401(auth_registry: Registry, start_mirror):
    mirror = start_mirror({auth_registry.host: auth_registry.url})
    repository, _, tag = IMAGES["oci"].rpartition(":")

    response = httpx.get(f"{mirror.url}/v2/{repository}/manifests/{tag}")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="p2p-test"'
