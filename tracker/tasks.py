"""The life of a task: creation, one ingest at a seeder, metainfo, failure, waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.ids import Digest, InfoHash, InvalidValue
from core.tasks import API_PREFIX, IngestRequest, SeederHeartbeat, TaskRequest, TaskState
from tracker.metainfo import parse_metainfo
from tracker.metrics import TrackerMetrics
from tracker.seeders import Seeder, SeederRegistry, check_heartbeat
from tracker.settings import TrackerSettings
from tracker.store import TERMINAL_STATES, TaskRecord, TaskStore
from tracker.swarms import SwarmRegistry
from tracker.task_ids import canonical_url, task_id

log = logging.getLogger(__name__)

PENDING = frozenset({TaskState.PENDING})
INGESTING = frozenset({TaskState.INGESTING})
UNFINISHED = frozenset({TaskState.PENDING, TaskState.INGESTING})

# Tasks handed to seeders in one dispatch pass; the rest wait for the next pass.
DISPATCH_BATCH = 100

# How often a waiter re-reads the store, to see changes made by another
# tracker that shares it (changes made here wake the waiter at once).
WAIT_POLL_SECONDS = 1.0


class TaskNotFound(Exception):
    """No task has the requested id."""


class TaskConflict(Exception):
    """The request conflicts with the task's current state, which the message names."""


@dataclass
class IngestOrder:
    """The fetch details a seeder needs, kept in memory only because they contain credentials."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    piece_length: int | None = None


class TaskService:
    """Create tasks, hand each to exactly one seeder, and record how the ingest ends."""

    def __init__(
        self,
        store: TaskStore,
        swarms: SwarmRegistry,
        seeders: SeederRegistry,
        settings: TrackerSettings,
        metrics: TrackerMetrics,
    ) -> None:
        self.store = store
        self.swarms = swarms
        self.seeders = seeders
        self.settings = settings
        self.metrics = metrics
        self._orders: dict[str, IngestOrder] = {}
        self._changes: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task] = set()
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Register the torrents of ready tasks and start the periodic work."""
        for info_hash, size in await self.store.ready_torrents():
            self.swarms.register(InfoHash.from_hex(info_hash), size)
        log.info("task store loaded", extra={"swarms": len(self.swarms.swarms)})

        # trust_env=False keeps proxy variables from routing seeder requests elsewhere.
        self._http = httpx.AsyncClient(timeout=self.settings.seeder_request_timeout, trust_env=False)
        self._spawn(self._dispatch_loop())
        self._spawn(self._expiry_loop())

    async def stop(self) -> None:
        """Cancel the periodic work and in-flight dispatches; stopping twice is safe."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # Task API

    async def request(self, request: TaskRequest) -> TaskRecord:
        """Return the task of a URL, creating it and starting its ingest if it is new or failed."""
        digest = Digest.parse(request.digest) if request.digest else None
        if request.piece_length is not None:
            _check_piece_length(request.piece_length)
        identifier = task_id(request.url, digest, self.settings.volatile_query_parameters)
        canonical = canonical_url(request.url, self.settings.volatile_query_parameters)

        record, created = await self.store.create(
            TaskRecord(
                id=identifier,
                url=canonical,
                state=TaskState.PENDING,
                digest=str(digest) if digest else None,
                piece_length=request.piece_length,
            )
        )

        # A failed task is retried by the next request for it; the
        # compare-and-set lets exactly one of several such requests restart it.
        restarted = None
        if not created and record.state == TaskState.FAILED:
            restarted = await self.store.update(
                identifier, frozenset({TaskState.FAILED}), state=TaskState.PENDING, error=None,
                dispatch_attempts=0, seeder_id=None,
            )  # fmt: skip
            record = restarted or await self.store.get(identifier) or record

        if record.state in UNFINISHED:
            # The newest request carries the freshest signature and credentials.
            self._orders[identifier] = IngestOrder(request.url, dict(request.headers), request.piece_length)

        if created or restarted is not None:
            log.info("task created" if created else "task restarted", extra={"task_id": identifier})
            self._notify(identifier)
            self._spawn(self._dispatch(identifier))
        return record

    async def get(self, identifier: str) -> TaskRecord:
        record = await self.store.get(identifier)
        if record is None:
            raise TaskNotFound(f"task {identifier}")
        return record

    async def wait(self, identifier: str, seconds: float) -> TaskRecord:
        """Return the task once it is ready or failed, or as it is after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            record = await self.get(identifier)
            remaining = deadline - loop.time()
            if record.state in TERMINAL_STATES or remaining <= 0:
                return record
            event = self._changes.setdefault(identifier, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), min(remaining, WAIT_POLL_SECONDS))
            except TimeoutError:
                pass

    async def metainfo(self, identifier: str) -> bytes:
        data = await self.store.get_metainfo(identifier)
        if data is None:
            record = await self.get(identifier)
            raise TaskConflict(f"task {identifier} has no metainfo yet: its state is {record.state.value}")
        return data

    async def register_metainfo(self, identifier: str, data: bytes) -> TaskRecord:
        """Check a torrent file from a seeder, store it and serve its info hash."""
        record = await self.get(identifier)
        metainfo = parse_metainfo(data)
        if record.state == TaskState.READY and record.info_hash not in (None, metainfo.info_hash.hex):
            raise TaskConflict(
                f"task {identifier} is ready with info_hash {record.info_hash}; "
                f"metainfo with info_hash {metainfo.info_hash.hex} cannot replace it"
            )
        if not metainfo.private:
            log.warning(
                "metainfo is not private, so clients may look for peers outside the tracker",
                extra={"task_id": identifier, "info_hash": metainfo.info_hash.hex},
            )

        updated = await self.store.set_metainfo(identifier, metainfo.info_hash.hex, metainfo.size, data)
        if updated is None:
            raise TaskNotFound(f"task {identifier}")
        self.swarms.register(metainfo.info_hash, metainfo.size)
        self._orders.pop(identifier, None)
        self._notify(identifier)
        log.info(
            "task ready",
            extra={"task_id": identifier, "info_hash": metainfo.info_hash.hex, "size": metainfo.size},
        )
        return updated

    async def register_failure(self, identifier: str, error: str) -> TaskRecord:
        """Mark an unfinished task failed with the seeder's reason."""
        record = await self.get(identifier)
        updated = await self.store.update(identifier, UNFINISHED, state=TaskState.FAILED, error=error[:2000])
        if updated is None:
            raise TaskConflict(f"task {identifier} is {record.state.value}; only an unfinished task can fail")
        self._orders.pop(identifier, None)
        self._notify(identifier)
        log.warning("task failed", extra={"task_id": identifier, "error": error[:2000]})
        return updated

    # Seeders

    def heartbeat(self, seeder_id: str, heartbeat: SeederHeartbeat) -> None:
        check_heartbeat(seeder_id, heartbeat)
        if self.seeders.heartbeat(seeder_id, heartbeat):
            log.info(
                "seeder joined",
                extra={"seeder_id": seeder_id, "url": heartbeat.api_url, "peer": heartbeat.peer_address},
            )
            # Hand the pending tasks to the new seeder now rather than at the next pass.
            self._spawn(self.dispatch_pending())

    async def dispatch_pending(self) -> None:
        """Send pending tasks to their seeders, and take back tasks from seeders that died.

        NOTE: a task stays ingesting for as long as its seeder sends heartbeats.
        No deadline applies to a live seeder that never reports an outcome.
        """
        for seeder_id in self.seeders.expire():
            log.warning("seeder dropped: no heartbeat", extra={"seeder_id": seeder_id})
        self.metrics.live_seeders = len(self.seeders.live())

        for record in await self.store.list_by_state(INGESTING, DISPATCH_BATCH):
            if record.seeder_id is None or not self.seeders.is_live(record.seeder_id):
                await self._take_back(record, f"seeder {record.seeder_id} stopped sending heartbeats")

        if not self.seeders.live():
            return
        for record in await self.store.list_by_state(PENDING, DISPATCH_BATCH):
            await self._dispatch(record.id)

    async def _dispatch(self, identifier: str) -> None:
        seeder = self.seeders.choose(identifier)
        if seeder is None:
            log.info("task pending: no live seeder", extra={"task_id": identifier})
            return

        # Claim the task before the request, so that one ingest runs even
        # when several passes or trackers dispatch at once.
        record = await self.store.update(identifier, PENDING, state=TaskState.INGESTING, seeder_id=seeder.id)
        if record is None:
            return
        self._notify(identifier)

        error = await self._send_ingest(seeder, record)
        if error is None:
            self.metrics.ingest_dispatches["accepted"] += 1
            log.info("ingest requested", extra={"task_id": identifier, "seeder_id": seeder.id})
            return
        self.metrics.ingest_dispatches["failed"] += 1
        await self._take_back(record, error)

    async def _send_ingest(self, seeder: Seeder, record: TaskRecord) -> str | None:
        """Ask a seeder to ingest a task; return None when it accepted, else the error."""
        order = self._orders.get(record.id) or IngestOrder(record.url, {}, record.piece_length)
        body = IngestRequest(
            task_id=record.id,
            url=order.url,
            digest=record.digest,
            headers=order.headers,
            piece_length=order.piece_length,
            announce_url=self.settings.announce_url,
        )
        headers = {}
        if self.settings.api_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_token.get_secret_value()}"
        if self._http is None:
            return "the tracker is shutting down"
        try:
            response = await self._http.post(
                f"{seeder.api_url.rstrip('/')}{API_PREFIX}/ingest", json=body.model_dump(), headers=headers
            )
        except httpx.HTTPError as error:
            return f"ingest request to seeder {seeder.id} at {seeder.api_url} failed: {error!r}"
        if response.status_code not in (200, 202):
            return (
                f"seeder {seeder.id} rejected the ingest with HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        return None

    async def _take_back(self, record: TaskRecord, reason: str) -> None:
        """Return an ingesting task to pending, or fail it once it used up its attempts."""
        attempts = record.dispatch_attempts + 1
        if attempts >= self.settings.dispatch_attempts:
            error = f"no seeder completed the ingest after {attempts} attempts; last error: {reason}"
            updated = await self.store.update(
                record.id, INGESTING, state=TaskState.FAILED, error=error, dispatch_attempts=attempts
            )
            if updated is not None:
                self._orders.pop(record.id, None)
                log.warning("task failed", extra={"task_id": record.id, "error": error})
        else:
            updated = await self.store.update(
                record.id, INGESTING, state=TaskState.PENDING, seeder_id=None, dispatch_attempts=attempts
            )
            if updated is not None:
                log.warning("ingest not started, will retry", extra={"task_id": record.id, "error": reason})
        self._notify(record.id)

    # Periodic work

    async def _dispatch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.dispatch_interval)
            try:
                await self.dispatch_pending()
            except Exception:
                log.exception("dispatch pass failed; retrying at the next pass")

    async def _expiry_loop(self) -> None:
        # Sweeping twice per interval drops a silent peer between two and two
        # and a half intervals after its last announce.
        period = self.settings.announce_interval / 2
        while True:
            await asyncio.sleep(period)
            dropped = self.swarms.expire(self.settings.peer_timeout)
            if dropped:
                log.debug("expired peers", extra={"peers": dropped})

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def _notify(self, identifier: str) -> None:
        event = self._changes.pop(identifier, None)
        if event is not None:
            event.set()


def _check_piece_length(piece_length: int) -> None:
    # A piece is a power of two of at least one 16 KiB block, the unit that
    # peers request. The upper bound keeps the hash check of one piece short.
    if piece_length < 16 * 1024 or piece_length > 128 * 1024**2 or piece_length & (piece_length - 1):
        raise InvalidValue(
            f"invalid piece_length {piece_length}: expected a power of two from 16384 (16 KiB) "
            "to 134217728 (128 MiB)"
        )
