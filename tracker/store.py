"""The task store: where the tracker keeps tasks and their metainfo.

Peers are not in the store: they live in memory (tracker.swarms), because
every client re-announces within one interval.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

from core.tasks import API_PREFIX, Task, TaskState

TERMINAL_STATES = frozenset({TaskState.READY, TaskState.FAILED})


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored.

    `url` is the canonical URL of the task id, without volatile parameters, so
    that no signature reaches the disk. The URL to fetch stays in memory.
    """

    id: str
    url: str
    state: TaskState
    digest: str | None = None
    piece_length: int | None = None
    error: str | None = None
    info_hash: str | None = None
    size: int | None = None
    seeder_id: str | None = None
    dispatch_attempts: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_api(self) -> Task:
        ready = self.state == TaskState.READY
        return Task(
            id=self.id,
            url=self.url,
            digest=self.digest,
            state=self.state,
            error=self.error,
            info_hash=self.info_hash if ready else None,
            metainfo_url=f"{API_PREFIX}/tasks/{self.id}/metainfo" if ready else None,
            size=self.size if ready else None,
            seeder_id=self.seeder_id,
        )

    def changed(self, **changes: object) -> TaskRecord:
        return replace(self, **changes, updated_at=time.time())


class StoreError(Exception):
    """The store failed (disk, database); the message names the operation."""


class TaskStore(ABC):
    """Persistent tasks and metainfo.

    Every method may raise StoreError when the backend fails. Implementations
    must make `create` and `update` atomic, because several requests (and, with
    a shared backend, several trackers) race on one task.
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed; the other methods need it first.

        Opening an open store does nothing.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release the backend; closing twice is safe."""

    @abstractmethod
    async def create(self, record: TaskRecord) -> tuple[TaskRecord, bool]:
        """Insert `record` unless a task with its id exists.

        Return the stored task and True when this call inserted it. Of any
        number of concurrent calls with one id, exactly one returns True.
        """

    @abstractmethod
    async def get(self, task_id: str) -> TaskRecord | None:
        """Return the task, or None when there is none with this id."""

    @abstractmethod
    async def update(
        self, task_id: str, expected: frozenset[TaskState], **changes: object
    ) -> TaskRecord | None:
        """Apply `changes` (fields of TaskRecord) if the task's state is in `expected`.

        This is a compare-and-set: return the updated task, or None when the
        task is missing or its state is not in `expected`, in which case
        nothing changes.
        """

    @abstractmethod
    async def set_metainfo(self, task_id: str, info_hash: str, size: int, metainfo: bytes) -> TaskRecord | None:
        """Store the torrent file of a task and mark it ready, with no error.

        Replaces earlier metainfo of the task. Return the updated task, or None
        when the task does not exist.
        """

    @abstractmethod
    async def get_metainfo(self, task_id: str) -> bytes | None:
        """Return the torrent file of a ready task, or None."""

    @abstractmethod
    async def list_by_state(self, states: frozenset[TaskState], limit: int) -> list[TaskRecord]:
        """Return at most `limit` tasks in one of `states`, oldest update first."""

    @abstractmethod
    async def count_by_state(self) -> dict[TaskState, int]:
        """Return the number of tasks in each state, with 0 for a state that has none."""

    @abstractmethod
    async def ready_torrents(self) -> list[tuple[str, int]]:
        """Return the hex info hash and content size of every ready task."""
