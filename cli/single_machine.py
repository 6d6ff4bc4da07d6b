"""The single-machine mode: a seeder running inside the tracker's process.

One machine (a laptop, the demo, a small site) then needs one command. The
seeder still talks to the tracker over HTTP on loopback, exactly as a separate
seeder would, so the two packages stay independent.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from core.settings import load_settings
from seeder.app import create_app as create_seeder_app
from seeder.server import SHUTDOWN_GRACE_SECONDS
from seeder.settings import SeederSettings
from tracker.settings import TrackerSettings

log = logging.getLogger(__name__)


class EmbeddedSeeder:
    """A seeder served by uvicorn on a thread of this process, on a free loopback port."""

    def __init__(self, tracker_settings: TrackerSettings):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]

        # P2P_SEEDER_* variables still apply, for example the BitTorrent listen address.
        self.settings = load_settings(
            SeederSettings,
            None,
            listen=f"127.0.0.1:{port}",
            tracker=tracker_settings.base_url,
            tracker_token=(
                tracker_settings.api_token.get_secret_value() if tracker_settings.api_token else None
            ),
            data_dir=tracker_settings.data_dir / "seeder",
        )
        config = uvicorn.Config(
            create_seeder_app(self.settings),
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="embedded-seeder", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        log.info("embedded seeder started", extra={"api_url": self.settings.api_url})

    def stop(self) -> None:
        """Stop the seeder and wait for it; stopping twice is safe."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_GRACE_SECONDS + 5)
