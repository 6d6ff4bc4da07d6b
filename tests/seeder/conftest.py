from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.tasks import IngestRequest
from seeder.cache import Cache, CachedFile
from seeder.ingest import Ingest
from seeder.origin import FetchOptions
from tests.support.origin import Origin

ANNOUNCE_URL = "http://127.0.0.1:9/announce"

# Short waits, so the retry tests take seconds rather than minutes.
FAST_RETRIES = FetchOptions(connect_timeout=5, read_timeout=5, attempts=3, retry_max_delay=2)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    root = tmp_path / "origin"
    root.mkdir()
    with Origin(root) as server:
        yield server


def put_file(origin: Origin, name: str, size: int) -> bytes:
    """Write `size` random bytes as `name` under the origin's root; return them."""
    data = os.urandom(size)
    (origin.root / name).write_bytes(data)
    return data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request_for(origin: Origin, name: str, **fields) -> IngestRequest:
    fields.setdefault("url", origin.url(f"/{name}"))
    return IngestRequest(task_id=f"url:{name}", announce_url=ANNOUNCE_URL, **fields)


def run_ingest(
    cache: Cache, request: IngestRequest, options: FetchOptions = FAST_RETRIES
) -> CachedFile:
    return Ingest(request, cache, options).run()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "data", quota=0)
