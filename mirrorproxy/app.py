"""The mirror's ASGI application: the registry read side, the local fetch API, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mirrorproxy import fetch_api, registry_api
from mirrorproxy.mirror import Mirror
from mirrorproxy.settings import MirrorSettings


def create_app(settings: MirrorSettings) -> FastAPI:
    """Build the mirror's application; its session and cache start with the lifespan."""
    mirror = Mirror(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mirror.start()
        try:
            yield
        finally:
            await mirror.stop()

    app = FastAPI(title="p2p-mirror", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mirror = mirror
    app.include_router(registry_api.router)
    app.include_router(fetch_api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(mirror.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        # Name each bad field in plain words instead of FastAPI's nested error list.
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"] if part != "body") or "body"
            problems.append(f"{location}: {item['msg']}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=400)

    return app
