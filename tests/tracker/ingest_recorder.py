"""A stand-in for a seeder's ingest endpoint, for tests of how the tracker dispatches tasks.

It records every POST /api/v1/ingest body and replies with a chosen status.
The test itself sends the heartbeats that make the tracker count it as live.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.tracker.conftest import Tracker


class IngestRecorder:
    """An HTTP server on loopback that records ingest requests."""

    def __init__(self, seeder_id: str, status: int = 202) -> None:
        self.seeder_id = seeder_id
        self.status = status
        self.requests: list[dict] = []
        self.authorization: list[str | None] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._beating = threading.Event()
        self._heart: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> IngestRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_heartbeats()
        self._server.shutdown()
        self._server.server_close()

    def heartbeat(self, tracker: Tracker) -> httpx.Response:
        return tracker.api(
            "PUT",
            f"/seeders/{self.seeder_id}",
            json={"api_url": self.url, "peer_address": "127.0.0.1:6881"},
        )

    def start_heartbeats(self, tracker: Tracker, period: float = 0.3, limit: float = 120.0) -> None:
        """Send a heartbeat every `period` seconds until stopped, for at most `limit` seconds."""
        self.heartbeat(tracker).raise_for_status()
        self._beating.set()

        def beat() -> None:
            deadline = time.monotonic() + limit
            while self._beating.is_set() and time.monotonic() < deadline:
                time.sleep(period)
                if self._beating.is_set():
                    self.heartbeat(tracker)

        self._heart = threading.Thread(target=beat, daemon=True)
        self._heart.start()

    def stop_heartbeats(self) -> None:
        self._beating.clear()
        if self._heart is not None:
            self._heart.join(5)
            self._heart = None

    def task_ids(self) -> list[str]:
        with self._lock:
            return [request["task_id"] for request in self.requests]

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Wait until `count` ingest requests arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise TimeoutError(f"seeder {self.seeder_id} got {len(self.requests)} ingest requests, expected {count}")


def _make_handler(recorder: IngestRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server method name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/api/v1/ingest":
                with recorder._lock:
                    recorder.requests.append(json.loads(body))
                    recorder.authorization.append(self.headers.get("Authorization"))
                status = recorder.status
            else:
                status = 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
