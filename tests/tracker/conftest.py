"""A real `p2p-tracker` process per test module, and helpers that speak its protocols."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

import bencode
import httpx
import pytest

from tests.support.processes import VENV_BIN, free_port, running

# The BitTorrent protocol's block size; the smallest piece these torrents use.
PIECE_LENGTH = 16 * 1024


@dataclass
class Tracker:
    """A running tracker and how to reach it."""

    url: str
    data_dir: Path
    log_path: Path
    token: str | None = None

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {**self.api_headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def register(self, metainfo: bytes, url: str | None = None) -> dict:
        """Create a task and register `metainfo` for it by hand, as a seeder would."""
        url = url or f"http://127.0.0.1:9/{secrets.token_hex(8)}"
        task = self.api("POST", "/tasks", json={"url": url})
        task.raise_for_status()
        ready = self.api("PUT", f"/tasks/{task.json()['id']}/metainfo", content=metainfo)
        ready.raise_for_status()
        return ready.json()

    def announce(self, info_hash: bytes, peer_id: bytes, **params: object) -> dict:
        """Announce and return the decoded reply; `params` are added as they are given."""
        return bdecode(self.announce_raw(info_hash, peer_id, **params))

    def announce_raw(self, info_hash: bytes, peer_id: bytes, host: str | None = None, **params: object) -> bytes:
        query = {"port": 6881, "uploaded": 0, "downloaded": 0, "left": 1000, **params}
        text = "&".join(
            [f"info_hash={quote_from_bytes(info_hash)}", f"peer_id={quote_from_bytes(peer_id)}"]
            + [f"{name}={value}" for name, value in query.items()]
        )
        return get_raw(f"{host or self.url}/announce?{text}")

    def scrape(self, *info_hashes: bytes) -> dict:
        text = "&".join(f"info_hash={quote_from_bytes(info_hash)}" for info_hash in info_hashes)
        return bdecode(get_raw(f"{self.url}/scrape?{text}"))


def get_raw(url: str) -> bytes:
    """GET `url` with its query exactly as written, and require status 200."""
    response = httpx.get(httpx.URL(url), timeout=10)
    assert response.status_code == 200, f"{url} returned HTTP {response.status_code}: {response.text[:300]}"
    return response.content


def bdecode(data: bytes) -> dict:
    return bencode.Bencode(encoding=None).decode(data)


def make_metainfo(size: int = 10 * PIECE_LENGTH, name: str | None = None) -> tuple[bytes, bytes]:
    """Return a private v1 torrent of `size` random bytes that no peer has, and its info hash.

    Announce and scrape only need a registered info hash, not the content.
    """
    pieces = -(-size // PIECE_LENGTH)
    info = {
        b"length": size,
        b"name": (name or secrets.token_hex(6)).encode(),
        b"piece length": PIECE_LENGTH,
        b"pieces": os.urandom(20 * pieces),
        b"private": 1,
    }
    metainfo = bencode.bencode({b"announce": b"http://127.0.0.1:9/announce", b"info": info})
    return metainfo, hashlib.sha1(bencode.bencode(info)).digest()


def peer_id(number: int) -> bytes:
    """Return a 20-byte peer id that is not valid UTF-8, to catch decoding mistakes."""
    return b"-PT0001-\xff\xfe" + number.to_bytes(10, "big")


@contextmanager
def start_tracker(tmp_path: Path, *args: str, token: str | None = None, listen: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[Tracker]:
    """Run `p2p-tracker` on a free loopback port with extra command-line `args`."""
    listen = listen or f"127.0.0.1:{free_port()}"
    data_dir = tmp_path / "tracker-data"
    log_path = tmp_path / f"tracker-{listen.replace(':', '_').replace('[', '').replace(']', '')}.log"
    environment = dict(env or {})
    if token:
        environment["P2P_TRACKER_API_TOKEN"] = token
    tracker = Tracker(f"http://{listen}", data_dir, log_path, token)
    with running(
        [str(VENV_BIN / "p2p-tracker"), "--listen", listen, "--data-dir", str(data_dir), *args],
        ready_url=f"{tracker.url}/healthz",
        log_path=log_path,
        env=environment,
    ):
        yield tracker


def write_config(path: Path, **settings: object) -> Path:
    """Write a TOML settings file with scalar values; return its path."""
    lines = []
    for name, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{name} = {value}")
        else:
            lines.append(f'{name} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    """A tracker with default settings except a short announce interval and a numwant cap of 100."""
    tmp_path = tmp_path_factory.mktemp("tracker")
    config = write_config(tmp_path / "tracker.toml", announce_interval=60, min_announce_interval=5, max_numwant=100)
    with start_tracker(tmp_path, "--config", str(config)) as running_tracker:
        yield running_tracker
