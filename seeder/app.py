"""The seeder's HTTP API: `POST /api/v1/ingest`, `/healthz` and `/metrics`.

`create_app(settings)` is the whole seeder as an ASGI app, its machinery
started and stopped by the app's lifespan. A process that serves several
components (the tracker with a seeder beside it) builds a `SeederService`,
includes `create_router(service)` in its own app, and calls the service's
`start()` and `close()` from its own lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.tasks import API_PREFIX, IngestRequest
from seeder.service import SeederService, ServiceStopped
from seeder.settings import SeederSettings


def create_router(service: SeederService) -> APIRouter:
    router = APIRouter()

    @router.post(f"{API_PREFIX}/ingest", status_code=202)
    def ingest(request: IngestRequest) -> dict[str, str]:
        """Start fetching a task from its origin; the outcome goes to the tracker when the ingest ends."""
        try:
            submitted = service.submit(request)
        except ServiceStopped as error:
            raise HTTPException(503, str(error)) from None
        return {"task_id": request.task_id, "status": submitted.value}

    @router.get("/healthz")
    def healthz() -> dict[str, object]:
        return {
            "status": "ok",
            "seeder_id": service.seeder_id,
            "peer_address": service.peer_address,
            "ingests_running": len(service.running()),
        }

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(settings: SeederSettings, service: SeederService | None = None) -> FastAPI:
    """Build the seeder's app; its lifespan starts and closes `service` (one from `settings` by default)."""
    service = service or SeederService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Starting reads the cache and adds every cached file to libtorrent:
        # blocking work that stays off the event loop.
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(title="p2p-fetch seeder", lifespan=lifespan)
    app.state.seeder = service
    app.include_router(create_router(service))
    return app
