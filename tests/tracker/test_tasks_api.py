"""The task API of a real tracker process: ids, metainfo, waiting, failure, tokens, restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import libtorrent as lt
import pytest

from tests.support.torrents import make_torrent, write_random_file
from tests.tracker.conftest import Tracker, make_metainfo, peer_id, start_tracker, write_config

DIGEST = "sha256:" + "ab" * 32


def create(tracker: Tracker, **body: object) -> httpx.Response:
    return tracker.api("POST", "/tasks", json=body)


def test_new_task_is_pending(tracker: Tracker) -> None:
    response = create(tracker, url="http://127.0.0.1:9/pending-file")

    assert response.status_code == 200
    task = response.json()
    assert task["state"] == "pending"
    assert task["id"].startswith("url:")
    assert task["info_hash"] is None
    assert task["metainfo_url"] is None
    assert tracker.api("GET", f"/tasks/{task['id']}").json() == task


def test_task_id_from_digest(tracker: Tracker) -> None:
    first = create(tracker, url="http://127.0.0.1:9/a", digest=DIGEST).json()
    second = create(tracker, url="http://127.0.0.1:9/b", digest=DIGEST).json()

    assert first["id"] == DIGEST
    assert second["id"] == DIGEST
    assert second["digest"] == DIGEST


def test_task_id_ignores_signatures_and_headers(tracker: Tracker) -> None:
    signed = [
        "https://bucket.s3.example/layer.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z"
        "&X-Amz-Expires=300&X-Amz-Signature=aaaa&versionId=7",
        "https://BUCKET.s3.example:443/layer.tar?versionId=7&X-Amz-Signature=bbbb&X-Amz-Date=20260102T000000Z",
        "https://bucket.s3.example/layer.tar?versionId=7&X-Goog-Signature=cccc&X-Goog-Expires=60#part",
        "https://bucket.s3.example/layer.tar?versionId=7&Expires=1&Signature=dd&Key-Pair-Id=K1&Policy=p",
    ]
    ids = set()
    for number, url in enumerate(signed):
        task = create(tracker, url=url, headers={"Authorization": f"Bearer user-{number}"}).json()
        ids.add(task["id"])
        assert task["url"] == "https://bucket.s3.example/layer.tar?versionId=7"

    other_version = create(tracker, url="https://bucket.s3.example/layer.tar?versionId=8").json()
    other_path = create(tracker, url="https://bucket.s3.example/Layer.tar?versionId=7").json()

    assert len(ids) == 1
    assert other_version["id"] not in ids
    assert other_path["id"] not in ids


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"url": "ftp://127.0.0.1/file"}, 400, "invalid url 'ftp://127.0.0.1/file': expected an http:// or https:// URL"),
        ({"url": "http:///file"}, 400, "invalid url 'http:///file': the URL has no host"),
        ({"url": "http://127.0.0.1/f", "digest": "md5:00"}, 400, "invalid digest 'md5:00': only sha256:<64 hex digits> is supported"),
        ({"url": "http://127.0.0.1/f", "piece_length": 1000}, 400, "invalid piece_length 1000: expected a power of two"),
        ({"digest": DIGEST}, 422, "invalid request: body.url: Field required"),
        ({"url": 5}, 422, "invalid request: body.url: Input should be a valid string"),
    ],
)
def test_invalid_task_request(tracker: Tracker, body: dict, status: int, message: str) -> None:
    response = create(tracker, **body)

    assert response.status_code == status
    assert response.json()["error"].startswith(message)


def test_invalid_json_body(tracker: Tracker) -> None:
    response = tracker.api("POST", "/tasks", content=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request:")


def test_unknown_and_malformed_task_ids(tracker: Tracker) -> None:
    unknown = tracker.api("GET", "/tasks/url:" + "0" * 64)
    malformed = tracker.api("GET", "/tasks/nonsense")
    bad_wait = tracker.api("GET", "/tasks/url:" + "0" * 64, params={"wait": "100000"})

    assert unknown.status_code == 404
    assert unknown.json()["error"] == f"task url:{'0' * 64} not found"
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("invalid task id 'nonsense'")
    assert bad_wait.status_code == 400
    assert bad_wait.json()["error"] == "invalid wait 100000.0: expected 0 to 600 seconds"


def test_metainfo_registration(tracker: Tracker, tmp_path: Path) -> None:
    content = tmp_path / "content.bin"
    write_random_file(content, 300_000)
    metainfo = make_torrent(content, f"{tracker.url}/announce", piece_length=16384)
    expected_hash = str(lt.torrent_info(lt.bdecode(metainfo)).info_hashes().v1)
    task = create(tracker, url="http://127.0.0.1:9/content.bin").json()

    missing = tracker.api("GET", f"/tasks/{task['id']}/metainfo")
    garbage = tracker.api("PUT", f"/tasks/{task['id']}/metainfo", content=b"d4:info")
    ready = tracker.api("PUT", f"/tasks/{task['id']}/metainfo", content=metainfo)
    served = tracker.api("GET", f"/tasks/{task['id']}/metainfo")

    assert missing.status_code == 409
    assert missing.json()["error"] == f"task {task['id']} has no metainfo yet: its state is pending"
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "invalid metainfo: the body is not valid bencode"
    assert ready.status_code == 200
    assert ready.json()["state"] == "ready"
    assert ready.json()["info_hash"] == expected_hash
    assert ready.json()["size"] == 300_000
    assert ready.json()["metainfo_url"] == f"/api/v1/tasks/{task['id']}/metainfo"
    assert served.headers["content-type"] == "application/x-bittorrent"
    assert served.content == metainfo
    reply = tracker.announce(bytes.fromhex(expected_hash), peer_id(1))
    assert b"failure reason" not in reply


@pytest.mark.parametrize(
    ("metainfo", "message"),
    [
        (b"i5e", "invalid metainfo: expected a bencoded dictionary at the top level"),
        (b"d8:announce3:abce", "invalid metainfo: missing the info dictionary"),
        (b"d4:infod6:lengthi5e4:name1:x12:piece lengthi0e6:pieces20:" + b"x" * 20 + b"ee",
         "invalid metainfo: info.piece length 0 is not a positive integer"),
        (b"d4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces3:abcee",
         "invalid metainfo: info.pieces must be a non-empty multiple of 20 bytes"),
        (b"d4:infod4:name1:x12:piece lengthi16384e6:pieces20:" + b"x" * 20 + b"ee",
         "invalid metainfo: info needs either length or a non-empty files list"),
        (b"d4:infod6:lengthi99999e4:name1:x12:piece lengthi16384e6:pieces20:" + b"x" * 20 + b"ee",
         "invalid metainfo: 1 piece hashes do not match 99999 bytes in pieces of 16384 bytes"),
    ],
)
def test_malformed_metainfo_rejected(tracker: Tracker, metainfo: bytes, message: str) -> None:
    task = create(tracker, url="http://127.0.0.1:9/malformed").json()

    response = tracker.api("PUT", f"/tasks/{task['id']}/metainfo", content=metainfo)

    assert response.status_code == 400
    assert response.json()["error"] == message
    assert tracker.api("GET", f"/tasks/{task['id']}").json()["state"] == "pending"


def test_ready_task_keeps_its_info_hash(tracker: Tracker) -> None:
    first, first_hash = make_metainfo()
    second, _ = make_metainfo()
    task = tracker.register(first)

    again = tracker.api("PUT", f"/tasks/{task['id']}/metainfo", content=first)
    other = tracker.api("PUT", f"/tasks/{task['id']}/metainfo", content=second)

    assert again.status_code == 200
    assert other.status_code == 409
    assert tracker.api("GET", f"/tasks/{task['id']}").json()["info_hash"] == first_hash.hex()


def test_wait_returns_when_ready(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    url = "http://127.0.0.1:9/waited"
    task_id = create(tracker, url=url).json()["id"]

    def register_later() -> None:
        time.sleep(0.5)
        tracker.api("PUT", f"/tasks/{task_id}/metainfo", content=metainfo)

    thread = threading.Thread(target=register_later)
    started = time.monotonic()
    thread.start()
    waited = tracker.api("POST", "/tasks", params={"wait": 20}, json={"url": url})
    elapsed = time.monotonic() - started
    thread.join()

    assert waited.json()["state"] == "ready"
    assert waited.json()["info_hash"] == info_hash.hex()
    assert elapsed < 10


def test_wait_times_out_pending(tracker: Tracker) -> None:
    task_id = create(tracker, url="http://127.0.0.1:9/never").json()["id"]

    started = time.monotonic()
    waited = tracker.api("GET", f"/tasks/{task_id}", params={"wait": 1.0})
    elapsed = time.monotonic() - started

    assert waited.json()["state"] == "pending"
    assert 0.9 <= elapsed < 5


def test_failure_then_retry(tracker: Tracker) -> None:
    url = "http://127.0.0.1:9/failing"
    task_id = create(tracker, url=url).json()["id"]

    failed = tracker.api("PUT", f"/tasks/{task_id}/failure", json={"error": "origin returned HTTP 404"})
    shown = tracker.api("GET", f"/tasks/{task_id}").json()
    retried = create(tracker, url=url).json()

    assert failed.status_code == 200
    assert shown["state"] == "failed"
    assert shown["error"] == "origin returned HTTP 404"
    assert retried["state"] == "pending"
    assert retried["error"] is None


def test_failure_of_ready_task_rejected(tracker: Tracker) -> None:
    metainfo, _ = make_metainfo()
    task = tracker.register(metainfo)

    response = tracker.api("PUT", f"/tasks/{task['id']}/failure", json={"error": "late"})

    assert response.status_code == 409
    assert tracker.api("GET", f"/tasks/{task['id']}").json()["state"] == "ready"


def test_metrics_and_health(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    tracker.announce(info_hash, peer_id(1), left=0)
    tracker.announce(b"\x07" * 20, peer_id(1))

    health = httpx.get(f"{tracker.url}/healthz", timeout=10)
    text = httpx.get(f"{tracker.url}/metrics", timeout=10).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }

    assert health.json() == {"status": "ok"}
    assert values['p2p_tracker_announces_total{result="ok"}'] >= 1
    assert values['p2p_tracker_announces_total{result="unregistered"}'] >= 1
    assert values["p2p_tracker_swarms"] >= 1
    assert values['p2p_tracker_peers{role="seeder"}'] >= 1
    assert values['p2p_tracker_tasks{state="ready"}'] >= 1
    assert 'p2p_tracker_tasks{state="failed"}' in values


def test_token_protects_api_only(tmp_path: Path) -> None:
    config = write_config(tmp_path / "small.toml", max_metainfo_size="1KiB")
    with start_tracker(tmp_path, "--config", str(config), token="s3cret-token") as tracker:
        body = {"url": "http://127.0.0.1:9/protected"}
        anonymous = httpx.post(f"{tracker.url}/api/v1/tasks", json=body, timeout=10)
        wrong = httpx.post(f"{tracker.url}/api/v1/tasks", json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
        heartbeat = httpx.put(
            f"{tracker.url}/api/v1/seeders/s1",
            json={"api_url": "http://127.0.0.1:9", "peer_address": "127.0.0.1:6881"},
            timeout=10,
        )
        allowed = create(tracker, **body)
        too_big = tracker.api("PUT", f"/tasks/{allowed.json()['id']}/metainfo", content=b"x" * 2000)
        announce = tracker.announce(b"\x01" * 20, peer_id(1))
        health = httpx.get(f"{tracker.url}/healthz", timeout=10)
        log = tracker.log_path.read_text()

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert heartbeat.status_code == 401
    assert allowed.status_code == 200
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "metainfo larger than max_metainfo_size (1024 bytes)"
    assert announce[b"failure reason"].startswith(b"unregistered info_hash")
    assert health.status_code == 200
    assert "s3cret-token" not in log


def test_restart_keeps_tasks_and_metainfo(tmp_path: Path) -> None:
    metainfo, info_hash = make_metainfo()
    with start_tracker(tmp_path) as tracker:
        task = tracker.register(metainfo)
        pending = create(tracker, url="http://127.0.0.1:9/still-pending").json()

    with start_tracker(tmp_path) as tracker:
        after = tracker.api("GET", f"/tasks/{task['id']}").json()
        served = tracker.api("GET", f"/tasks/{task['id']}/metainfo").content
        still = tracker.api("GET", f"/tasks/{pending['id']}").json()
        reply = tracker.announce(info_hash, peer_id(1), left=0)

    assert after == task
    assert served == metainfo
    assert still["state"] == "pending"
    assert b"failure reason" not in reply
    assert reply[b"complete"] == 1
