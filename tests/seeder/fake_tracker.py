"""A stand-in for the tracker's seeder-facing API, for tests where the tracker is not under test.

It records heartbeats and the outcome of each ingest (the metainfo or the
failure) that a seeder reports, and answers 200 to all of them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class FakeTracker:
    def __init__(self) -> None:
        self.heartbeats: list[tuple[str, dict]] = []
        self.outcomes: dict[str, list[tuple[str, object]]] = {}
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_outcome(self, task_id: str, timeout: float = 30.0, count: int = 1) -> tuple[str, object]:
        """Wait for the `count`-th outcome of a task: ("metainfo", bytes) or ("failure", error text)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.outcomes.get(task_id, [])) >= count, timeout):
                raise TimeoutError(f"no outcome #{count} for task {task_id} within {timeout} s")
            return self.outcomes[task_id][count - 1]

    def wait_heartbeat(self, timeout: float = 10.0) -> tuple[str, dict]:
        with self._changed:
            if not self._changed.wait_for(lambda: self.heartbeats, timeout):
                raise TimeoutError(f"no heartbeat within {timeout} s")
            return self.heartbeats[-1]

    def _record(self, kind: str, path: str, body: bytes, content_type: str) -> None:
        parts = [unquote(part) for part in path.split("/")]
        with self._changed:
            if kind == "seeder":
                self.heartbeats.append((parts[4], json.loads(body)))
            elif kind == "metainfo":
                assert content_type == "application/x-bittorrent", content_type
                self.outcomes.setdefault(parts[4], []).append(("metainfo", body))
            else:
                self.outcomes.setdefault(parts[4], []).append(("failure", json.loads(body)["error"]))
            self._changed.notify_all()


def _make_handler(tracker: FakeTracker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?")[0]
            if path.startswith("/api/v1/seeders/"):
                kind = "seeder"
            elif path.endswith("/metainfo"):
                kind = "metainfo"
            elif path.endswith("/failure"):
                kind = "failure"
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            tracker._record(kind, path, body, self.headers.get("Content-Type", ""))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    return Handler


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
