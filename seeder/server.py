"""Running the seeder under uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import socket

import uvicorn

from core.host_config import HostConfig
from core.ids import InvalidValue
from core.settings import log_settings
from seeder.app import create_app
from seeder.service import SeederService
from seeder.settings import SECRET_FIELDS, SeederSettings, split_host_port

log = logging.getLogger(__name__)

# Seconds that open connections get to finish after SIGTERM before they are closed.
SHUTDOWN_GRACE_SECONDS = 10


class StartupError(Exception):
    """The seeder could not start; the message names what to change."""


def serve(settings: SeederSettings, host_config: HostConfig | None = None) -> None:
    """Serve the seeder in this thread until a signal stops it; raise StartupError if it cannot start.

    Without `host_config` it is read from settings.host_config, and an
    invalid one raises HostConfigError.
    """
    log_settings(log, settings, secret_fields=SECRET_FIELDS)
    try:
        settings.api_url  # noqa: B018 - raises when the tracker could not reach the API
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except InvalidValue as error:
        raise StartupError(str(error)) from None
    except OSError as error:
        raise StartupError(f"cannot create data_dir {str(settings.data_dir)!r}: {error}") from None

    sock = _bind(settings)
    config = uvicorn.Config(
        create_app(settings, SeederService(settings, host_config)),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise StartupError("the seeder failed during start-up; the log above names the cause")


def _bind(settings: SeederSettings) -> socket.socket:
    host, port = split_host_port(settings.listen, "listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(
            f"cannot listen on {settings.listen}: {error.strerror or error}; choose another listen address or port"
        ) from None
    sock.set_inheritable(True)
    return sock
