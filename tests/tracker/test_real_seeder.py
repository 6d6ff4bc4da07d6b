"""The tracker with a real `p2p-seeder` process and a local HTTP origin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support.cluster import tracker_and_seeder
from tests.support.origin import Origin
from tests.support.torrents import write_random_file

SIZE = 3 * 1024 * 1024 + 17


async def post_all(tracker_url: str, urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=90) as client:
        return await asyncio.gather(
            *[client.post(f"{tracker_url}/api/v1/tasks", params={"wait": 60}, json={"url": url}) for url in urls]
        )


def test_concurrent_signed_requests_one_ingest(tmp_path: Path) -> None:
    root = tmp_path / "origin"
    root.mkdir()
    write_random_file(root / "layer.bin", SIZE)

    with Origin(root) as origin, tracker_and_seeder(tmp_path) as cluster:
        # Each host sends its own freshly signed URL of the same object.
        urls = [origin.url("/layer.bin", signed=True) for _ in range(25)]
        replies = asyncio.run(post_all(cluster.tracker_url, urls))
        metainfo = httpx.get(f"{cluster.tracker_url}{replies[0].json()['metainfo_url']}", timeout=10)
        sent = origin.bytes_sent("/layer.bin")

    tasks = [reply.json() for reply in replies]
    assert {reply.status_code for reply in replies} == {200}
    assert {task["state"] for task in tasks} == {"ready"}
    assert len({task["id"] for task in tasks}) == 1
    assert len({task["info_hash"] for task in tasks}) == 1
    assert tasks[0]["size"] == SIZE
    assert metainfo.headers["content-type"] == "application/x-bittorrent"
    assert sent <= 1.01 * SIZE, f"the origin sent {sent} bytes for one {SIZE}-byte object"
