"""The mirror's local fetch API, which `p2p-fetch` uses when the host runs a mirror."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tests.mirror.test_blobs_swarm import cluster  # noqa: F401 (a fixture)
from tests.support.origin import Origin

FETCH = "/api/v1/fetch"


@pytest.fixture
def origin(netns, tmp_path):
    """A local HTTP origin serving tmp_path/files, inside the namespace with the mirror."""
    root = tmp_path / "files"
    root.mkdir()
    with Origin(root) as started:
        yield started


def _file(origin: Origin, name: str, size: int) -> tuple[str, bytes]:
    content = os.urandom(size)
    (origin.root / name).write_bytes(content)
    return "sha256:" + hashlib.sha256(content).hexdigest(), content


def test_fetch_to_output_through_swarm(origin, cluster, start_mirror, tmp_path):  # noqa: F811
    mirror = start_mirror({}, cluster.tracker_url)
    digest, content = _file(origin, "data.bin", 5 * 1024 * 1024 + 17)
    output = tmp_path / "out" / "data.bin"
    output.parent.mkdir()

    response = httpx.post(
        mirror.url + FETCH,
        json={"url": origin.url("/data.bin"), "digest": digest, "output": str(output)},
        timeout=120,
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"path": str(output), "size": len(content), "sha256": digest, "source": "swarm"}
    assert output.read_bytes() == content
    assert [path.name for path in output.parent.iterdir()] == ["data.bin"]

    again = httpx.post(
        mirror.url + FETCH,
        json={"url": origin.url("/data.bin"), "digest": digest, "output": str(tmp_path / "out" / "copy.bin")},
        timeout=120,
    )
    assert again.json()["source"] == "cache"
    assert (tmp_path / "out" / "copy.bin").read_bytes() == content


def test_fetch_streams_without_output(origin, cluster, start_mirror):  # noqa: F811
    mirror = start_mirror({}, cluster.tracker_url)
    digest, content = _file(origin, "stream.bin", 3 * 1024 * 1024)

    response = httpx.post(mirror.url + FETCH, json={"url": origin.url("/stream.bin"), "digest": digest}, timeout=120)

    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(content))
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == content


def test_fetch_without_digest_reports_sha256(origin, start_mirror, tmp_path):
    mirror = start_mirror({})
    _, content = _file(origin, "plain.bin", 100_000)
    output = tmp_path / "plain.bin"

    response = httpx.post(mirror.url + FETCH, json={"url": origin.url("/plain.bin"), "output": str(output)}, timeout=60)

    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert response.json()["source"] == "upstream"
    assert output.read_bytes() == content


def test_fetch_follows_redirect_to_signed_url(origin, start_mirror, tmp_path):
    mirror = start_mirror({})
    digest, content = _file(origin, "moved.bin", 300_000)
    origin.redirect("/moved.bin")
    output = tmp_path / "moved.bin"

    response = httpx.post(
        mirror.url + FETCH, json={"url": origin.url("/moved.bin"), "digest": digest, "output": str(output)}, timeout=60
    )

    assert response.status_code == 200, response.text
    assert output.read_bytes() == content
    assert [record.status for record in origin.requests("/moved.bin")] == [307, 200]


def test_fetch_wrong_digest_writes_nothing(origin, cluster, start_mirror, tmp_path):  # noqa: F811
    mirror = start_mirror({}, cluster.tracker_url)
    _file(origin, "changed.bin", 200_000)
    output = tmp_path / "changed.bin"

    response = httpx.post(
        mirror.url + FETCH,
        json={"url": origin.url("/changed.bin"), "digest": "sha256:" + "1" * 64, "output": str(output)},
        timeout=120,
    )

    assert response.status_code == 502
    assert "sha256:" + "1" * 64 in response.json()["detail"]
    assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".changed")] == []


def test_fetch_rejects_invalid_requests(start_mirror, tmp_path):
    mirror = start_mirror({})
    cases = [
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "http://127.0.0.1/x", "digest": "md5:abc"}, "digest"),
        ({"url": "http://127.0.0.1/x", "output": "relative/x.bin"}, "output"),
        ({"url": "http://127.0.0.1/x", "output": str(tmp_path / "missing" / "x.bin")}, "output"),
        ({"digest": "sha256:" + "0" * 64}, "url"),
        ({"url": "http://127.0.0.1/x", "headers": ["not", "a", "map"]}, "headers"),
    ]

    for body, field in cases:
        response = httpx.post(mirror.url + FETCH, json=body)

        assert response.status_code == 400, body
        assert field in response.json()["detail"], body

    not_json = httpx.post(mirror.url + FETCH, content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
