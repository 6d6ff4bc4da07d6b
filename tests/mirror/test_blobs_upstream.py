"""Blobs through a mirror without a tracker: authorized, fetched from the upstream, cached, ranged."""

from __future__ import annotations

import hashlib

import httpx

from tests.support.registry import IMAGES, Registry


def _blob_path(image: str, digest: str) -> str:
    repository = IMAGES[image].rpartition(":")[0]
    return f"/v2/{repository}/blobs/{digest}"


def test_blob_get_matches_digest(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    digest = registry.layer_digests("big")[-1]

    response = httpx.get(mirror.url + _blob_path("big", digest), timeout=60)

    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert mirror.metrics()['p2p_mirror_back_to_source_total{reason="no_tracker"}'] == 1


def test_cached_blob_not_fetched_again(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    digest = registry.config_digest("docker")
    path = _blob_path("docker", digest)
    # The registry serves every test of the package, so its log counts from here.
    requests_before = registry.blob_requests(digest)

    first = httpx.get(mirror.url + path)
    second = httpx.get(mirror.url + path)
    head = httpx.head(mirror.url + path)

    assert first.status_code == second.status_code == head.status_code == 200
    assert first.content == second.content
    assert registry.blob_requests(digest) - requests_before == 1
    assert head.headers["Content-Length"] == str(len(first.content))
    metrics = mirror.metrics()
    assert metrics['p2p_mirror_blobs_served_total{source="upstream"}'] == 1
    assert metrics['p2p_mirror_blobs_served_total{source="cache"}'] == 1


def test_blob_head_forwarded_when_not_cached(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    digest = registry.layer_digests("oci")[0]
    heads_before = registry.blob_requests(digest, method="HEAD")
    gets_before = registry.blob_requests(digest)

    response = httpx.head(mirror.url + _blob_path("oci", digest))

    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    assert registry.blob_requests(digest, method="HEAD") - heads_before == 1
    assert registry.blob_requests(digest) == gets_before


def test_range_requests_cold_and_cached(registry: Registry, start_mirror):
    digest = registry.layer_digests("big")[-1]
    path = _blob_path("big", digest)
    whole = httpx.get(registry.url + path, timeout=60).content
    size = len(whole)

    for state in ("cold", "cached"):
        mirror = start_mirror({registry.host: registry.url})
        if state == "cached":
            assert httpx.get(mirror.url + path, timeout=60).status_code == 200

        middle = httpx.get(mirror.url + path, headers={"Range": "bytes=100-199"}, timeout=60)
        assert middle.status_code == 206, state
        assert middle.headers["Content-Range"] == f"bytes 100-199/{size}", state
        assert middle.content == whole[100:200], state

        resume_at = size - 1_000_000
        tail = httpx.get(mirror.url + path, headers={"Range": f"bytes={resume_at}-"}, timeout=60)
        assert tail.status_code == 206, state
        assert tail.headers["Content-Range"] == f"bytes {resume_at}-{size - 1}/{size}", state
        assert tail.headers["Content-Length"] == "1000000", state
        assert tail.content == whole[resume_at:], state

        outside = httpx.get(mirror.url + path, headers={"Range": f"bytes={size}-"}, timeout=60)
        assert outside.status_code == 416, state
        assert outside.headers["Content-Range"] == f"bytes */{size}", state


def test_unknown_blob_returns_registry_404(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    path = _blob_path("oci", "sha256:" + "0" * 64)

    direct = httpx.get(registry.url + path)
    proxied = httpx.get(mirror.url + path)

    assert proxied.status_code == direct.status_code == 404
    assert proxied.json() == direct.json()
    assert proxied.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def _arm64_layer(registry: Registry) -> str:
    index = registry.manifest("multi").json()
    arm64 = next(entry for entry in index["manifests"] if entry["platform"]["architecture"] == "arm64")
    repository = IMAGES["multi"].rpartition(":")[0]
    manifest = httpx.get(
        f"{registry.url}/v2/{repository}/manifests/{arm64['digest']}", headers={"Accept": arm64["mediaType"]}
    )
    return manifest.json()["layers"][0]["digest"]


def test_cache_evicts_least_recently_used(registry: Registry, start_mirror):
    # Room for one busybox layer (about 1 MiB) and the small config, not two layers.
    quota = 1_500_000
    mirror = start_mirror({registry.host: registry.url}, "", "--cache-quota", str(quota))
    amd64_layer = registry.layer_digests("oci")[0]
    config = registry.config_digest("oci")
    arm64_layer = _arm64_layer(registry)

    for image, digest in [("oci", amd64_layer), ("oci", config), ("multi", arm64_layer)]:
        assert httpx.get(mirror.url + _blob_path(image, digest), timeout=60).status_code == 200

    metrics = mirror.metrics()
    assert metrics["p2p_mirror_cache_evictions_total"] == 1
    assert metrics["p2p_mirror_cache_blobs"] == 2
    assert metrics["p2p_mirror_cache_bytes"] <= quota
    cached = {path.name for path in (mirror.data_dir / "blobs").iterdir()}
    assert cached == {config.replace(":", "-"), arm64_layer.replace(":", "-")}

    heads_before = registry.blob_requests(amd64_layer, method="HEAD")
    assert httpx.head(mirror.url + _blob_path("oci", amd64_layer)).status_code == 200
    assert registry.blob_requests(amd64_layer, method="HEAD") == heads_before + 1


def test_cache_survives_restart(registry: Registry, start_mirror, tmp_path):
    digest = registry.layer_digests("oci")[0]
    first = start_mirror({registry.host: registry.url}, data_dir=tmp_path / "shared-cache")
    body = httpx.get(first.url + _blob_path("oci", digest), timeout=60).content
    gets_before = registry.blob_requests(digest)

    second = start_mirror({registry.host: registry.url}, data_dir=tmp_path / "shared-cache")
    again = httpx.get(second.url + _blob_path("oci", digest), timeout=60)

    assert again.content == body
    assert registry.blob_requests(digest) == gets_before
    assert second.metrics()['p2p_mirror_blobs_served_total{source="cache"}'] == 1
