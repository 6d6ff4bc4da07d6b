"""Running the tracker under uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from core.settings import log_settings
from tracker.app import DATABASE_NAME, create_app
from tracker.settings import TrackerSettings, listen_warning
from tracker.sqlite_store import SqliteTaskStore
from tracker.store import StoreError

log = logging.getLogger(__name__)

# Seconds that open connections get to finish after SIGTERM before they are closed.
SHUTDOWN_GRACE_SECONDS = 10


class StartupError(Exception):
    """The tracker could not start; the message names what to change."""


def serve(settings: TrackerSettings) -> None:
    """Serve the tracker in this thread until a signal stops it; raise StartupError if it cannot start."""
    log_settings(log, settings, secret_fields={"api_token"})
    warning = listen_warning(settings)
    if warning:
        log.warning(warning)

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"cannot create data_dir {str(settings.data_dir)!r}: {error}") from None

    # Opening the store here turns a bad database into a one-line error
    # instead of a traceback from the ASGI lifespan.
    store = SqliteTaskStore(settings.data_dir / DATABASE_NAME)
    try:
        asyncio.run(store.open())
    except StoreError as error:
        raise StartupError(f"{error}; move the file away or choose another data_dir") from None

    try:
        sock = _bind(settings)
    except StartupError:
        asyncio.run(store.close())
        raise
    config = uvicorn.Config(
        create_app(settings, store),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise StartupError("the tracker failed during start-up; the log above names the cause")


def _bind(settings: TrackerSettings) -> socket.socket:
    address = settings.listen_address
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as error:
        sock.close()
        raise StartupError(
            f"cannot listen on {settings.listen}: {error.strerror or error}; "
            "choose another listen address or port"
        ) from None
    sock.set_inheritable(True)
    return sock
