"""The mirror's ASGI application: the registry read side, the local fetch API, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from core.host_config import HostConfig, HostConfigError
from mirrorproxy import admin_api, fetch_api, registry_api
from mirrorproxy.mirror import Mirror
from mirrorproxy.settings import MirrorSettings

log = logging.getLogger(__name__)


def create_app(settings: MirrorSettings, host_config: HostConfig | None = None) -> FastAPI:
    """Build the mirror's application; its session and cache start with the lifespan.

    Raises HostConfigError when `host_config` is None and the host configuration file is invalid.
    """
    mirror = Mirror(settings, host_config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mirror.start()
        reloads_on_sighup = _reload_on_sighup(mirror)
        try:
            yield
        finally:
            if reloads_on_sighup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await mirror.stop()

    app = FastAPI(title="p2p-mirror", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mirror = mirror
    app.include_router(registry_api.router)
    app.include_router(fetch_api.router)
    app.include_router(admin_api.router)

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


def _reload_on_sighup(mirror: Mirror) -> bool:
    """Reload the host configuration on SIGHUP; return whether the handler was installed.

    Signal handlers belong to the main thread, so an app served from another
    thread (a test's) reloads only through the admin API.
    """
    if threading.current_thread() is not threading.main_thread():
        return False

    def reload() -> None:
        log.info("SIGHUP received: reloading the host configuration")
        try:
            mirror.limits.reload()
        except HostConfigError as error:
            log.error("host configuration reload failed; the limits in force are unchanged", extra={"error": str(error)})

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    return True
