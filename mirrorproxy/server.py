"""Running the mirror under uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import socket

import uvicorn

from core.host_config import HostConfig
from core.settings import log_settings
from mirrorproxy.app import create_app
from mirrorproxy.settings import SECRET_FIELDS, MirrorSettings, split_host_port

log = logging.getLogger(__name__)

# Seconds that open connections get to finish after SIGTERM before they are closed.
SHUTDOWN_GRACE_SECONDS = 10


class StartupError(Exception):
    """The mirror could not start; the message names what to change."""


def serve(settings: MirrorSettings, host_config: HostConfig | None = None) -> None:
    """Serve the mirror in this thread until a signal stops it; raise StartupError if it cannot start.

    SIGHUP reloads the host configuration. Without `host_config` it is read
    from settings.host_config, and an invalid one raises HostConfigError.
    """
    # httpx logs every request at INFO and httpcore every step at DEBUG: too
    # much for a proxy, whose own lines name the requests that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    log_settings(log, settings, secret_fields=SECRET_FIELDS)
    if not settings.upstreams:
        log.warning("no upstream registry set: /v2/ requests fail until one is added with --upstream")

    try:
        (settings.data_dir / "blobs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"cannot create data_dir {str(settings.data_dir)!r}: {error}") from None

    sock = _bind(settings.listen)
    config = uvicorn.Config(
        create_app(settings, host_config),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise StartupError("the mirror failed during start-up; the log above names the cause")


def _bind(listen: str) -> socket.socket:
    host, port = split_host_port(listen, "listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(
            f"cannot listen on {listen}: {error.strerror or error}; choose another listen address or port"
        ) from None
    sock.set_inheritable(True)
    return sock
