"""The admin API: read the host limits in force, and reload the host configuration as SIGHUP does.

GET  /api/v1/admin/host-config         the limits in force and the file they came from
POST /api/v1/admin/host-config/reload  read the file again and apply it to running downloads

Like the fetch API, these endpoints serve every client that reaches the
mirror's listen address, which is loopback by default.
"""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from core.host_config import HostConfigError
from core.tasks import API_PREFIX
from mirrorproxy.limits import HostLimits

log = logging.getLogger(__name__)

router = APIRouter()

HOST_CONFIG_PATH = f"{API_PREFIX}/admin/host-config"


def _describe(limits: HostLimits) -> dict:
    return {"path": str(limits.path) if limits.path else None, "limits": limits.config.model_dump()}


@router.get(HOST_CONFIG_PATH)
async def host_config(request: Request) -> JSONResponse:
    return JSONResponse(_describe(request.app.state.mirror.limits))


@router.post(f"{HOST_CONFIG_PATH}/reload")
async def reload_host_config(request: Request) -> JSONResponse:
    limits: HostLimits = request.app.state.mirror.limits
    try:
        await anyio.to_thread.run_sync(limits.reload)
    except HostConfigError as error:
        log.error("host configuration reload failed; the limits in force are unchanged", extra={"error": str(error)})
        return JSONResponse({"detail": f"{error}; the limits in force are unchanged"}, status_code=400)
    return JSONResponse(_describe(limits))
