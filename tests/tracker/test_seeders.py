"""Seeder heartbeats and ingest dispatch: one ingest per task, on the rendezvous seeder."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.tracker.conftest import Tracker, start_tracker, write_config
from tests.tracker.ingest_recorder import IngestRecorder

TOKEN = "cluster-token"


@pytest.fixture
def dispatching_tracker(tmp_path: Path) -> Iterator[Tracker]:
    """A tracker that drops seeders after 3 s of silence and dispatches every 0.3 s."""
    config = write_config(
        tmp_path / "tracker.toml", seeder_timeout=3, dispatch_interval=0.3, dispatch_attempts=3
    )
    with start_tracker(tmp_path, "--config", str(config), token=TOKEN) as tracker:
        yield tracker


def expected_seeder(task_id: str, seeder_ids: list[str]) -> str:
    """Pick the seeder by highest random weight: SHA-256 of `seeder NUL task`, first 8 bytes."""
    def weight(seeder_id: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{seeder_id}\x00{task_id}".encode()).digest()[:8], "big")

    return max(seeder_ids, key=weight)


async def post_concurrently(tracker: Tracker, body: dict, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers=tracker.api_headers, timeout=30) as client:
        return await asyncio.gather(
            *[client.post(f"{tracker.url}/api/v1/tasks", json=body) for _ in range(count)]
        )


def wait_state(tracker: Tracker, task_id: str, states: set[str], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = tracker.api("GET", f"/tasks/{task_id}").json()
        if task["state"] in states:
            return task
        time.sleep(0.1)
    raise TimeoutError(f"task {task_id} still {task['state']} after {timeout} s, expected {states}")


def test_concurrent_posts_start_one_ingest(dispatching_tracker: Tracker) -> None:
    tracker = dispatching_tracker
    url = "http://127.0.0.1:9/big.iso?X-Amz-Signature=abc"
    with IngestRecorder("seeder-a") as seeder:
        seeder.start_heartbeats(tracker)

        replies = asyncio.run(post_concurrently(tracker, {"url": url, "headers": {"Cookie": "k=v"}}, 40))
        task_id = replies[0].json()["id"]
        task = wait_state(tracker, task_id, {"ingesting"})
        time.sleep(1.0)  # time for any duplicate dispatch to arrive

        requests = seeder.wait_requests(1)

    assert all(reply.status_code == 200 for reply in replies)
    assert {reply.json()["id"] for reply in replies} == {task_id}
    assert len(requests) == 1
    assert requests[0]["task_id"] == task_id
    assert requests[0]["url"] == url
    assert requests[0]["headers"] == {"Cookie": "k=v"}
    assert requests[0]["announce_url"] == f"{tracker.url}/announce"
    assert seeder.authorization == [f"Bearer {TOKEN}"]
    assert task["seeder_id"] == "seeder-a"


def test_pending_task_dispatched_when_seeder_joins(dispatching_tracker: Tracker) -> None:
    tracker = dispatching_tracker
    replies = asyncio.run(post_concurrently(tracker, {"url": "http://127.0.0.1:9/early"}, 20))
    task_id = replies[0].json()["id"]
    assert {reply.json()["state"] for reply in replies} == {"pending"}

    with IngestRecorder("late-seeder") as seeder:
        seeder.start_heartbeats(tracker)
        wait_state(tracker, task_id, {"ingesting"})
        time.sleep(1.0)
        requests = seeder.wait_requests(1)

    assert [request["task_id"] for request in requests] == [task_id]


def test_rendezvous_choice_and_failover(dispatching_tracker: Tracker) -> None:
    tracker = dispatching_tracker
    ids = ["seeder-a", "seeder-b", "seeder-c"]
    with IngestRecorder(ids[0]) as a, IngestRecorder(ids[1]) as b, IngestRecorder(ids[2]) as c:
        seeders = {"seeder-a": a, "seeder-b": b, "seeder-c": c}
        for seeder in seeders.values():
            seeder.start_heartbeats(tracker)

        tasks = [tracker.api("POST", "/tasks", json={"url": f"http://127.0.0.1:9/f{n}"}).json()["id"] for n in range(12)]
        chosen = {task_id: wait_state(tracker, task_id, {"ingesting"})["seeder_id"] for task_id in tasks}

        # seeder-a stops sending heartbeats: its tasks go to the rendezvous choice among b and c.
        a.stop_heartbeats()
        moved = [task_id for task_id in tasks if chosen[task_id] == "seeder-a"]
        deadline = time.monotonic() + 20
        after: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            after = {task_id: tracker.api("GET", f"/tasks/{task_id}").json()["seeder_id"] for task_id in tasks}
            if all(after[task_id] not in (None, "seeder-a") for task_id in moved):
                break
            time.sleep(0.2)
        live = tracker.api("GET", "/seeders").json()

    assert chosen == {task_id: expected_seeder(task_id, ids) for task_id in tasks}
    assert len(set(chosen.values())) >= 2, f"12 tasks all on one seeder: {chosen}"
    assert moved, "no task landed on seeder-a; the failover was not exercised"
    for task_id in tasks:
        if task_id in moved:
            assert after[task_id] == expected_seeder(task_id, ["seeder-b", "seeder-c"])
            assert task_id in seeders[after[task_id]].task_ids()
        else:
            assert after[task_id] == chosen[task_id]
    assert sorted(seeder["id"] for seeder in live) == ["seeder-b", "seeder-c"]
    for seeder_id, seeder in seeders.items():
        assert sorted(seeder.task_ids()) == sorted(
            task_id for task_id in tasks if chosen[task_id] == seeder_id or after[task_id] == seeder_id
        )


def test_refusing_seeder_fails_task(dispatching_tracker: Tracker) -> None:
    tracker = dispatching_tracker
    with IngestRecorder("broken", status=500) as seeder:
        seeder.start_heartbeats(tracker)
        task_id = tracker.api("POST", "/tasks", json={"url": "http://127.0.0.1:9/doomed"}).json()["id"]
        task = wait_state(tracker, task_id, {"failed"})

    assert len(seeder.requests) == 3
    assert task["error"].startswith("no seeder completed the ingest after 3 attempts; last error: ")
    assert "seeder broken rejected the ingest with HTTP 500" in task["error"]


@pytest.mark.parametrize(
    ("seeder_id", "body", "message"),
    [
        ("bad id!", {"api_url": "http://127.0.0.1:1", "peer_address": "127.0.0.1:1"}, "invalid seeder id 'bad id!'"),
        ("s1", {"api_url": "127.0.0.1:1", "peer_address": "127.0.0.1:1"}, "invalid api_url '127.0.0.1:1'"),
        ("s1", {"api_url": "http://127.0.0.1:1", "peer_address": "nowhere"}, "invalid peer_address 'nowhere'"),
    ],
)
def test_malformed_heartbeat_rejected(dispatching_tracker: Tracker, seeder_id: str, body: dict, message: str) -> None:
    response = dispatching_tracker.api("PUT", f"/seeders/{seeder_id}", json=body)

    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
