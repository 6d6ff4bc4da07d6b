"""An HTTP origin for the testbed: serves the files of a directory and counts the body bytes it sends.

    python -m benchmarks.origin --listen 198.18.0.1:8000 --root DIR --stats FILE

It runs inside the origin host's namespace, where the benchmark cannot open
a socket, so it reports through FILE: a JSON object with `bytes_sent` and
`requests`, rewritten after every response. Single `Range` requests are
served, as the seeder's parallel ranged fetch needs.
"""

from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1024 * 1024


class CountingOrigin(ThreadingHTTPServer):
    """A threading HTTP server over `root` that writes its counters to `stats_path`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, stats_path: Path):
        super().__init__(address, _Handler)
        self.root = root.resolve()
        self.stats_path = stats_path
        self.bytes_sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        self.write_stats()

    def count(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def write_stats(self) -> None:
        with self._lock:
            stats = {"bytes_sent": self.bytes_sent, "requests": self.requests}
            # Replace the file in one step so a reader never sees half of it.
            temporary = self.stats_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(stats))
            os.replace(temporary, self.stats_path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingOrigin

    def log_message(self, format: str, *args: object) -> None:
        pass  # the counters are the record

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        self.server.count_request()
        file = (self.server.root / self.path.split("?")[0].lstrip("/")).resolve()
        if not file.is_relative_to(self.server.root) or not file.is_file():
            self.send_error(404)
            return

        size = file.stat().st_size
        start, end, status = 0, size, 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1, size) if match.group(2) else size
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206

        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not send_body:
            return

        try:
            self._send_body(file, start, end)
        finally:
            self.server.write_stats()

    def _send_body(self, file: Path, start: int, end: int) -> None:
        # sendfile keeps the origin's CPU time small next to the clients'.
        with open(file, "rb") as source:
            offset = start
            while offset < end:
                try:
                    sent = self.connection.sendfile(source, offset, min(_CHUNK, end - offset))
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                if sent == 0:
                    self.close_connection = True
                    return
                self.server.count(sent)
                offset += sent


@click.command()
@click.option("--listen", required=True, metavar="HOST:PORT", help="Address to serve on, e.g. 198.18.0.1:8000.")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory whose files are served.")
@click.option("--stats", "stats_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file the counters are written to after every response.")
def main(listen: str, root: Path, stats_path: Path) -> None:
    """Serve ROOT over HTTP and count the body bytes sent."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    server = CountingOrigin((host, int(port)), root, stats_path)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
