"""Blobs through the swarm: a real tracker and seeder, and mirrors that share one download."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.cluster import tracker_and_seeder
from tests.support.registry import IMAGES, Registry


def _blob_path(image: str, digest: str) -> str:
    repository = IMAGES[image].rpartition(":")[0]
    return f"/v2/{repository}/blobs/{digest}"


@pytest.fixture
def cluster(netns, tmp_path):
    # The test thread is inside the namespace, so the tracker and the
    # seeder it starts are too.
    (tmp_path / "cluster").mkdir()
    with tracker_and_seeder(tmp_path / "cluster") as started:
        yield started


def test_blob_through_swarm(registry: Registry, cluster, start_mirror):
    mirror = start_mirror({registry.host: registry.url}, cluster.tracker_url)
    digest = registry.layer_digests("big")[-1]

    response = httpx.get(mirror.url + _blob_path("big", digest), timeout=120)

    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    metrics = mirror.metrics()
    assert metrics['p2p_mirror_blobs_served_total{source="swarm"}'] == 1
    assert sum(value for name, value in metrics.items() if name.startswith("p2p_mirror_back_to_source_total")) == 0
    assert registry.blob_requests(digest) == 1
