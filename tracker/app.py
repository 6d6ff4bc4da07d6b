"""The tracker's ASGI application: announce and scrape on a lean path, the rest on FastAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tracker.announce import AnnounceEndpoint
from tracker.api import add_routes
from tracker.metrics import TrackerMetrics
from tracker.scrape import ScrapeEndpoint
from tracker.seeders import SeederRegistry
from tracker.settings import TrackerSettings
from tracker.sqlite_store import SqliteTaskStore
from tracker.store import TaskStore
from tracker.swarms import SwarmRegistry
from tracker.tasks import TaskService

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_BENCODE_HEADERS = [(b"content-type", b"text/plain")]

# The embedded task store's file under the data dir.
DATABASE_NAME = "tasks.sqlite3"


class TrackerApp:
    """Route /announce and /scrape to their endpoints and everything else to FastAPI.

    The two BitTorrent endpoints bypass FastAPI's routing, dependency injection
    and response classes: they take most of the traffic, and each announce
    then costs a few function calls on top of the HTTP server.
    """

    def __init__(self, api: FastAPI, announce: AnnounceEndpoint, scrape: ScrapeEndpoint) -> None:
        self.api = api
        self.announce = announce
        self.scrape = scrape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/announce":
                await self._reply(send, self.announce.handle(scope["query_string"], _client_host(scope)))
                return
            if path == "/scrape":
                await self._reply(send, self.scrape.handle(scope["query_string"], _client_host(scope)))
                return
        await self.api(scope, receive, send)

    @staticmethod
    async def _reply(send: Send, body: bytes) -> None:
        # Errors too go out with status 200 and a `failure reason`, as BitTorrent clients expect.
        await send({"type": "http.response.start", "status": 200, "headers": _BENCODE_HEADERS})
        await send({"type": "http.response.body", "body": body})


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def create_app(settings: TrackerSettings, store: TaskStore | None = None) -> TrackerApp:
    """Build the tracker: store, swarms, seeders, task service, endpoints and API."""
    store = store or SqliteTaskStore(settings.data_dir / DATABASE_NAME)
    swarms = SwarmRegistry()
    metrics = TrackerMetrics(swarms)
    seeders = SeederRegistry(settings.seeder_timeout)
    service = TaskService(store, swarms, seeders, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await service.start()
        log.info("tracker started", extra={"url": settings.base_url, "announce_url": settings.announce_url})
        try:
            yield
        finally:
            await service.stop()
            await store.close()
            log.info("tracker stopped")

    api = FastAPI(title="p2p-fetch tracker", lifespan=lifespan, docs_url=None, redoc_url=None)
    add_routes(api, settings, service, store, swarms, metrics)

    announce = AnnounceEndpoint(swarms, settings, metrics)
    scrape = ScrapeEndpoint(swarms, settings.max_scrape_info_hashes, metrics)
    return TrackerApp(api, announce, scrape)
