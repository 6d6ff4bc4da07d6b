"""The embedded task store: one SQLite database under the tracker's data dir."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from core.tasks import TaskState
from tracker.store import StoreError, TaskRecord, TaskStore

ResultT = TypeVar("ResultT")

_COLUMNS = [item.name for item in fields(TaskRecord)]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    digest TEXT,
    piece_length INTEGER,
    error TEXT,
    info_hash TEXT,
    size INTEGER,
    seeder_id TEXT,
    dispatch_attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, updated_at);
CREATE TABLE IF NOT EXISTS metainfo (
    task_id TEXT PRIMARY KEY REFERENCES tasks (id),
    data BLOB NOT NULL
);
"""


class SqliteTaskStore(TaskStore):
    """Tasks and metainfo in `DATA_DIR/tasks.sqlite3`, kept across restarts.

    One connection serves every call under a lock, so each method runs as
    one transaction. The calls run in a worker thread, off the event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self._connection is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the task database {str(self.path)!r}: {error}") from error
        self._connection = connection

    async def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def create(self, record: TaskRecord) -> tuple[TaskRecord, bool]:
        def insert(db: sqlite3.Connection) -> tuple[TaskRecord, bool]:
            placeholders = ", ".join("?" for _ in _COLUMNS)
            cursor = db.execute(
                f"INSERT OR IGNORE INTO tasks ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [getattr(record, name) for name in _COLUMNS],
            )
            if cursor.rowcount == 1:
                return record, True
            stored = _select(db, record.id)
            if stored is None:
                raise StoreError(f"task {record.id} was neither inserted nor found")
            return stored, False

        return await self._run("create a task", insert)

    async def get(self, task_id: str) -> TaskRecord | None:
        return await self._run("read a task", lambda db: _select(db, task_id))

    async def update(
        self, task_id: str, expected: frozenset[TaskState], **changes: object
    ) -> TaskRecord | None:
        def compare_and_set(db: sqlite3.Connection) -> TaskRecord | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = _select(db, task_id)
                if current is None or current.state not in expected:
                    db.execute("ROLLBACK")
                    return None
                updated = current.changed(**changes)
                _write(db, updated)
                db.execute("COMMIT")
                return updated
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run("update a task", compare_and_set)

    async def set_metainfo(self, task_id: str, info_hash: str, size: int, metainfo: bytes) -> TaskRecord | None:
        def store(db: sqlite3.Connection) -> TaskRecord | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = _select(db, task_id)
                if current is None:
                    db.execute("ROLLBACK")
                    return None
                updated = current.changed(state=TaskState.READY, error=None, info_hash=info_hash, size=size)
                _write(db, updated)
                db.execute(
                    "INSERT INTO metainfo (task_id, data) VALUES (?, ?) "
                    "ON CONFLICT (task_id) DO UPDATE SET data = excluded.data",
                    (task_id, metainfo),
                )
                db.execute("COMMIT")
                return updated
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run("store metainfo", store)

    async def get_metainfo(self, task_id: str) -> bytes | None:
        def select(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT data FROM metainfo WHERE task_id = ?", (task_id,)).fetchone()
            return bytes(row[0]) if row else None

        return await self._run("read metainfo", select)

    async def list_by_state(self, states: frozenset[TaskState], limit: int) -> list[TaskRecord]:
        def select(db: sqlite3.Connection) -> list[TaskRecord]:
            marks = ", ".join("?" for _ in states)
            rows = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE state IN ({marks}) "
                "ORDER BY updated_at LIMIT ?",
                [state.value for state in states] + [limit],
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._run("list tasks", select)

    async def count_by_state(self) -> dict[TaskState, int]:
        def count(db: sqlite3.Connection) -> dict[TaskState, int]:
            counts = dict.fromkeys(TaskState, 0)
            for state, number in db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"):
                counts[TaskState(state)] = number
            return counts

        return await self._run("count tasks", count)

    async def ready_torrents(self) -> list[tuple[str, int]]:
        def select(db: sqlite3.Connection) -> list[tuple[str, int]]:
            rows = db.execute(
                "SELECT info_hash, size FROM tasks WHERE state = ? AND info_hash IS NOT NULL",
                (TaskState.READY.value,),
            ).fetchall()
            return [(info_hash, size) for info_hash, size in rows]

        return await self._run("list ready torrents", select)

    async def _run(self, operation: str, work: Callable[[sqlite3.Connection], ResultT]) -> ResultT:
        def locked() -> ResultT:
            with self._lock:
                if self._connection is None:
                    raise StoreError(f"cannot {operation}: the task store is closed")
                try:
                    return work(self._connection)
                except sqlite3.Error as error:
                    raise StoreError(f"cannot {operation} in {str(self.path)!r}: {error}") from error

        return await asyncio.to_thread(locked)


def _select(db: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return _record(row) if row else None


def _write(db: sqlite3.Connection, record: TaskRecord) -> None:
    assignments = ", ".join(f"{name} = ?" for name in _COLUMNS if name != "id")
    values = [getattr(record, name) for name in _COLUMNS if name != "id"]
    db.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", [*values, record.id])


def _record(row: tuple) -> TaskRecord:
    values = dict(zip(_COLUMNS, row))
    values["state"] = TaskState(values["state"])
    return TaskRecord(**values)
