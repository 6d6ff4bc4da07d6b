"""The task and seeder API (JSON under /api/v1), health and metrics."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from core.ids import InfoHash, InvalidValue
from core.tasks import API_PREFIX, BITTORRENT_MEDIA_TYPE, SeederHeartbeat, Task, TaskFailure, TaskRequest
from tracker.metrics import TrackerMetrics
from tracker.settings import TrackerSettings
from tracker.store import StoreError, TaskStore
from tracker.swarms import SwarmRegistry
from tracker.task_ids import is_task_id
from tracker.tasks import TaskConflict, TaskNotFound, TaskService

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """The request lacks the bearer token, or carries a wrong one."""


class BodyTooLarge(Exception):
    """The request body is larger than the setting allows; the message names both sizes."""


def add_routes(
    app: FastAPI,
    settings: TrackerSettings,
    service: TaskService,
    store: TaskStore,
    swarms: SwarmRegistry,
    metrics: TrackerMetrics,
) -> None:
    """Mount the API, /healthz and /metrics on `app`, with their error replies."""
    expected_token = (
        settings.api_token.get_secret_value().encode() if settings.api_token is not None else None
    )

    def require_token(request: Request) -> None:
        if expected_token is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected_token):
            raise Unauthorized()

    def check_task_id(task_id: str) -> str:
        if not is_task_id(task_id):
            raise InvalidValue(f"invalid task id {task_id!r}: expected sha256:<64 hex> or url:<64 hex>")
        return task_id

    def check_wait(wait: float | None) -> float | None:
        if wait is not None and not 0 <= wait <= settings.max_wait:
            raise InvalidValue(f"invalid wait {wait}: expected 0 to {settings.max_wait:g} seconds")
        return wait

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token)])

    @api.post("/tasks", response_model=Task)
    async def create_task(request: TaskRequest, wait: float | None = Query(default=None)) -> Task:
        """Return the task of a URL; create it and start one ingest when it is new."""
        check_wait(wait)
        record = await service.request(request)
        if wait:
            record = await service.wait(record.id, wait)
        return record.to_api()

    @api.get("/tasks/{task_id}", response_model=Task)
    async def get_task(task_id: str, wait: float | None = Query(default=None)) -> Task:
        check_task_id(task_id)
        check_wait(wait)
        record = await service.wait(task_id, wait) if wait else await service.get(task_id)
        return record.to_api()

    @api.get("/tasks/{task_id}/metainfo")
    async def get_metainfo(task_id: str) -> Response:
        check_task_id(task_id)
        return Response(await service.metainfo(task_id), media_type=BITTORRENT_MEDIA_TYPE)

    @api.put("/tasks/{task_id}/metainfo", response_model=Task)
    async def put_metainfo(task_id: str, request: Request) -> Task:
        """Register the torrent a seeder built for a task; its info hash becomes announceable."""
        check_task_id(task_id)
        body = await _read_body(request, settings.max_metainfo_size)
        record = await service.register_metainfo(task_id, body)
        return record.to_api()

    @api.put("/tasks/{task_id}/failure", response_model=Task)
    async def put_failure(task_id: str, failure: TaskFailure) -> Task:
        check_task_id(task_id)
        record = await service.register_failure(task_id, failure.error)
        return record.to_api()

    @api.put("/seeders/{seeder_id}")
    async def put_seeder(seeder_id: str, heartbeat: SeederHeartbeat) -> dict[str, object]:
        """Record a seeder's heartbeat; the seeder is dropped after `timeout` seconds without one."""
        service.heartbeat(seeder_id, heartbeat)
        return {"id": seeder_id, "timeout": settings.seeder_timeout}

    @api.get("/seeders")
    async def list_seeders() -> list[dict[str, object]]:
        return [
            {"id": seeder.id, "api_url": seeder.api_url, "peer_address": seeder.peer_address}
            for seeder in service.seeders.live()
        ]

    @api.get("/swarms/{info_hash}")
    async def get_swarm(info_hash: str) -> dict[str, object]:
        """Return the peers of one swarm with their labels, for operators."""
        swarm = swarms.get(InfoHash.from_hex(info_hash).raw)
        if swarm is None:
            raise TaskNotFound(f"swarm {info_hash}")
        return {
            "info_hash": info_hash,
            "complete": swarm.complete,
            "incomplete": swarm.incomplete,
            "downloaded": swarm.downloaded,
            "peers": [
                {
                    "peer_id": peer.peer_id.hex(),
                    "ip": peer.ip,
                    "port": peer.port,
                    "left": peer.left,
                    "labels": peer.labels,
                }
                for peer in swarm.peers.values()
            ],
        }

    app.include_router(api)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        await store.get("url:" + "0" * 64)
        return {"status": "ok"}

    @app.get("/metrics")
    async def get_metrics() -> Response:
        try:
            metrics.tasks_by_state = {state.value: count for state, count in (await store.count_by_state()).items()}
        except StoreError as error:
            log.warning("metrics without task counts: the store failed", extra={"error": str(error)})
        metrics.live_seeders = len(service.seeders.live())
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    _add_error_replies(app)


async def _read_body(request: Request, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"metainfo larger than max_metainfo_size ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_replies(app: FastAPI) -> None:
    @app.exception_handler(InvalidValue)
    async def invalid(request: Request, error: InvalidValue) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, error: Unauthorized) -> JSONResponse:
        return _error(
            401,
            "missing or wrong bearer token: send Authorization: Bearer <api_token>",
            {"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(TaskNotFound)
    async def not_found(request: Request, error: TaskNotFound) -> JSONResponse:
        return _error(404, f"{error.args[0]} not found")

    @app.exception_handler(TaskConflict)
    async def conflict(request: Request, error: TaskConflict) -> JSONResponse:
        return _error(409, str(error))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return _error(413, str(error))

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, error: StoreError) -> JSONResponse:
        log.error("task store failed", extra={"error": str(error)})
        return _error(503, "the task store is unavailable; the tracker logged the cause, retry later")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{location}: {item.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(problems))
