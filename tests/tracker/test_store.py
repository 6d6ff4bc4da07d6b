"""The task store contract, run against every backend (today the embedded SQLite store)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from core.tasks import TaskState
from tracker.sqlite_store import SqliteTaskStore
from tracker.store import StoreError, TaskRecord, TaskStore

BACKENDS: dict[str, Callable[[Path], TaskStore]] = {
    "sqlite": lambda folder: SqliteTaskStore(folder / "tasks.sqlite3"),
}

PENDING = frozenset({TaskState.PENDING})


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], TaskStore]:
    return lambda: BACKENDS[request.param](tmp_path)


def record(number: int, state: TaskState = TaskState.PENDING) -> TaskRecord:
    return TaskRecord(id=f"url:{number:064x}", url=f"http://127.0.0.1:9/{number}", state=state)


def run(coroutine):  # noqa: ANN001, ANN201
    return asyncio.run(coroutine)


def test_create_is_atomic(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> list[bool]:
        store = make_store()
        await store.open()
        results = await asyncio.gather(*[store.create(record(1)) for _ in range(50)])
        await store.close()
        return [created for _, created in results]

    created = run(scenario())

    assert created.count(True) == 1


def test_get_missing_and_stored(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> tuple[TaskRecord | None, TaskRecord | None, TaskRecord]:
        store = make_store()
        await store.open()
        missing = await store.get(record(2).id)
        stored, _ = await store.create(record(2))
        again = await store.get(record(2).id)
        await store.close()
        return missing, again, stored

    missing, again, stored = run(scenario())

    assert missing is None
    assert again == stored


def test_update_compares_state(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> tuple[TaskRecord | None, TaskRecord | None, TaskRecord | None, TaskRecord | None]:
        store = make_store()
        await store.open()
        await store.create(record(3))
        claimed = await store.update(record(3).id, PENDING, state=TaskState.INGESTING, seeder_id="s1")
        lost = await store.update(record(3).id, PENDING, state=TaskState.INGESTING, seeder_id="s2")
        missing = await store.update(record(4).id, PENDING, state=TaskState.FAILED)
        current = await store.get(record(3).id)
        await store.close()
        return claimed, lost, missing, current

    claimed, lost, missing, current = run(scenario())

    assert claimed is not None
    assert claimed.seeder_id == "s1"
    assert lost is None
    assert missing is None
    assert current == claimed


def test_concurrent_claims_one_winner(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> list[TaskRecord | None]:
        store = make_store()
        await store.open()
        await store.create(record(5))
        claims = await asyncio.gather(
            *[store.update(record(5).id, PENDING, state=TaskState.INGESTING, seeder_id=f"s{n}") for n in range(20)]
        )
        await store.close()
        return claims

    claims = run(scenario())

    assert sum(claim is not None for claim in claims) == 1


def test_metainfo_marks_ready(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> tuple:
        store = make_store()
        await store.open()
        await store.create(record(6))
        await store.update(record(6).id, PENDING, state=TaskState.FAILED, error="boom")
        before = await store.get_metainfo(record(6).id)
        ready = await store.set_metainfo(record(6).id, "ab" * 20, 1234, b"d4:infod...ee")
        replaced = await store.set_metainfo(record(6).id, "ab" * 20, 1234, b"second")
        data = await store.get_metainfo(record(6).id)
        missing = await store.set_metainfo(record(7).id, "cd" * 20, 1, b"x")
        torrents = await store.ready_torrents()
        await store.close()
        return before, ready, replaced, data, missing, torrents

    before, ready, replaced, data, missing, torrents = run(scenario())

    assert before is None
    assert ready.state == TaskState.READY
    assert ready.error is None
    assert (ready.info_hash, ready.size) == ("ab" * 20, 1234)
    assert replaced.state == TaskState.READY
    assert data == b"second"
    assert missing is None
    assert torrents == [("ab" * 20, 1234)]


def test_list_and_count_by_state(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> tuple:
        store = make_store()
        await store.open()
        for number in range(10, 16):
            await store.create(record(number))
        await store.update(record(10).id, PENDING, state=TaskState.INGESTING)
        await store.update(record(11).id, PENDING, state=TaskState.FAILED)
        pending = await store.list_by_state(PENDING, limit=3)
        unfinished = await store.list_by_state(frozenset({TaskState.PENDING, TaskState.INGESTING}), limit=100)
        counts = await store.count_by_state()
        await store.close()
        return pending, unfinished, counts

    pending, unfinished, counts = run(scenario())

    assert [task.id for task in pending] == [record(n).id for n in (12, 13, 14)]
    assert len(unfinished) == 5
    assert counts == {TaskState.PENDING: 4, TaskState.INGESTING: 1, TaskState.READY: 0, TaskState.FAILED: 1}


def test_reopen_keeps_everything(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> tuple:
        store = make_store()
        await store.open()
        await store.create(record(20))
        ready = await store.set_metainfo(record(20).id, "ef" * 20, 99, b"torrent")
        await store.close()

        reopened = make_store()
        await reopened.open()
        task = await reopened.get(record(20).id)
        data = await reopened.get_metainfo(record(20).id)
        await reopened.close()
        return ready, task, data

    ready, task, data = run(scenario())

    assert task == ready
    assert data == b"torrent"


def test_closed_store_raises(make_store: Callable[[], TaskStore]) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.open()
        await store.close()
        await store.close()
        await store.get(record(1).id)

    with pytest.raises(StoreError, match="the task store is closed"):
        run(scenario())


def test_unusable_path_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteTaskStore(blocker / "tasks.sqlite3")

    with pytest.raises(StoreError, match="cannot open the task database"):
        run(store.open())
