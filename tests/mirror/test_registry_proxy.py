"""The mirror's read side of the OCI Distribution API: manifests and the rest forwarded unchanged."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.support.processes import free_port
from tests.support.registry import (
    ALL_MANIFEST_TYPES,
    DOCKER_MANIFEST,
    IMAGES,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
)


def _manifest_path(image: str) -> str:
    repository, _, tag = IMAGES[image].rpartition(":")
    return f"/v2/{repository}/manifests/{tag}"


def _accept(*media_types: str) -> list[tuple[str, str]]:
    return [("Accept", media_type) for media_type in media_types]


def test_ping_answers_registry_version(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})

    response = httpx.get(f"{mirror.url}/v2/")

    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_manifest_get_matches_upstream(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})

    for image, expected_type in [("oci", OCI_MANIFEST), ("docker", DOCKER_MANIFEST), ("multi", OCI_INDEX)]:
        direct = httpx.get(registry.url + _manifest_path(image), headers=_accept(*ALL_MANIFEST_TYPES))
        proxied = httpx.get(mirror.url + _manifest_path(image), headers=_accept(*ALL_MANIFEST_TYPES))

        assert proxied.status_code == 200, proxied.text
        assert proxied.headers["Content-Type"] == expected_type
        assert proxied.headers["Docker-Content-Digest"] == direct.headers["Docker-Content-Digest"]
        assert proxied.content == direct.content


class _RecordingHandler(BaseHTTPRequestHandler):
    """An upstream that records each request's headers as received, repeats included."""

    received: list[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self.received.append(list(self.headers.items()))
        body = b'{"schemaVersion": 2}'
        self.send_response(200)
        self.send_header("Content-Type", OCI_INDEX)
        self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


def test_manifest_headers_forwarded_one_by_one(start_mirror):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        mirror = start_mirror({"registry.test": f"http://127.0.0.1:{server.server_port}"})
        headers = [*_accept(DOCKER_MANIFEST, OCI_INDEX), ("Authorization", "Bearer token-1"), ("Cookie", "secret=1")]

        response = httpx.get(mirror.url + _manifest_path("multi"), headers=headers)

        assert response.status_code == 200
        assert response.headers["Content-Type"] == OCI_INDEX
        received = _RecordingHandler.received[-1]
        accepts = [value for name, value in received if name.lower() == "accept"]
        assert accepts == [DOCKER_MANIFEST, OCI_INDEX]
        assert ("Authorization", "Bearer token-1") in [(name.title(), value) for name, value in received]
        assert "cookie" not in [name.lower() for name, _ in received]
    finally:
        server.shutdown()
        server.server_close()


def test_manifest_head_has_no_body(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    direct = httpx.head(registry.url + _manifest_path("oci"), headers=_accept(OCI_MANIFEST))

    proxied = httpx.head(mirror.url + _manifest_path("oci"), headers=_accept(OCI_MANIFEST))

    assert proxied.status_code == 200
    assert proxied.headers["Content-Length"] == direct.headers["Content-Length"]
    assert proxied.headers["Docker-Content-Digest"] == direct.headers["Docker-Content-Digest"]
    assert proxied.content == b""


def test_manifest_unknown_tag_returns_upstream_error(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    path = "/v2/library/busybox/manifests/no-such-tag"

    direct = httpx.get(registry.url + path, headers=_accept(OCI_MANIFEST))
    proxied = httpx.get(mirror.url + path, headers=_accept(OCI_MANIFEST))

    assert proxied.status_code == direct.status_code == 404
    assert proxied.json() == direct.json()
    assert proxied.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_tags_list_forwarded(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})

    response = httpx.get(f"{mirror.url}/v2/tools/sub/busybox/tags/list")

    assert response.status_code == 200
    assert response.json() == {"name": "tools/sub/busybox", "tags": ["v2s2"]}


def test_ns_parameter_picks_upstream(registry: Registry, start_mirror):
    # The default upstream is a port where nothing listens, so only ?ns=
    # can reach the registry.
    dead = f"http://127.0.0.1:{free_port()}"
    mirror = start_mirror({"dead.example": dead, "registry.test": registry.url})
    path = _manifest_path("oci")

    with_ns = httpx.get(f"{mirror.url}{path}?ns=registry.test", headers=_accept(OCI_MANIFEST))
    without_ns = httpx.get(f"{mirror.url}{path}", headers=_accept(OCI_MANIFEST))
    unknown_ns = httpx.get(f"{mirror.url}{path}?ns=other.example", headers=_accept(OCI_MANIFEST))

    assert with_ns.status_code == 200
    assert without_ns.status_code == 502
    assert unknown_ns.status_code == 404
    assert "other.example" in unknown_ns.json()["errors"][0]["message"]


def test_upstream_down_returns_oci_error(start_mirror):
    dead = f"http://127.0.0.1:{free_port()}"
    mirror = start_mirror({"registry.test": dead})

    for method, path in [
        ("GET", "/v2/"),
        ("GET", "/v2/library/busybox/manifests/latest"),
        ("HEAD", "/v2/library/busybox/manifests/latest"),
        ("GET", "/v2/library/busybox/blobs/sha256:" + "a" * 64),
    ]:
        response = httpx.request(method, mirror.url + path)

        assert response.status_code in (502, 503), (method, path)
        if method == "GET":
            assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_bad_requests_get_oci_errors(registry: Registry, start_mirror):
    mirror = start_mirror({registry.host: registry.url})
    cases = [
        ("GET", "/v2/Library/BusyBox/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/library/busybox/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/busybox/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("PUT", "/v2/library/busybox/manifests/latest", 405, "UNSUPPORTED"),
        ("POST", "/v2/library/busybox/blobs/uploads/", 405, "UNSUPPORTED"),
    ]

    for method, path, status, code in cases:
        response = httpx.request(method, mirror.url + path)

        assert response.status_code == status, (method, path, response.text)
        assert response.json()["errors"][0]["code"] == code, (method, path)
