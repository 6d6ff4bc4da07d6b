"""A minimal HTTP origin for `make demo`: serves one file with Range support and counts the bytes it sends."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 256 * 1024


class CountingOrigin:
    """Serve `path` at `/<file name>` on 127.0.0.1 and count the body bytes sent."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.bytes_sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{self.path.name}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent


def _handler_for(origin: CountingOrigin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def _serve(self, send_body: bool) -> None:
            with origin._lock:
                origin.requests += 1
            if self.path.split("?")[0] != f"/{origin.path.name}":
                self.send_error(404)
                return

            start, end = 0, origin.size
            status = 200
            match = _RANGE.match(self.headers.get("Range", ""))
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)) + 1, origin.size) if match.group(2) else origin.size
                else:
                    start = max(origin.size - int(match.group(2)), 0)
                if start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{origin.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206

            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{origin.size}")
            self.end_headers()
            if not send_body:
                return

            with open(origin.path, "rb") as file:
                file.seek(start)
                remaining = end - start
                while remaining:
                    chunk = file.read(min(_CHUNK, remaining))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    origin._count(len(chunk))
                    remaining -= len(chunk)

    return Handler
