"""A local HTTP origin for tests: serves the files of a directory on 127.0.0.1.

It counts the body bytes it sends per path, supports single `Range` requests,
and can be configured to misbehave on a path:

    with Origin(tmp_path) as origin:
        origin.fail("/a.bin", 500, times=2)           # two 500s, then the file
        origin.fail("/b.bin", 429, retry_after=1)     # 429 with Retry-After: 1, always
        origin.redirect("/c.bin")                     # 307 to a signed-looking URL
        origin.throttle("/d.bin", 4 * 1024 * 1024)    # bytes per second, per response
        origin.cut("/e.bin", at=1000)                 # close the socket before file offset 1000, once
        origin.omit_content_length("/f.bin")          # body delimited by closing the connection
        origin.disable_ranges("/g.bin")               # ignore Range, always 200
        httpx.get(origin.url("/a.bin"))
        origin.bytes_sent("/a.bin"), origin.requests("/a.bin"), origin.max_concurrent("/a.bin")

Paths ignore the query string, so `/a.bin?X-Amz-Signature=...` is `/a.bin`.
The server runs in a thread of the test process, one thread per connection.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CHUNK = 64 * 1024

# The query parameter whose presence marks a URL as already signed, so a
# redirected request is served instead of redirected again.
SIGNATURE_PARAMETER = "X-Amz-Signature"


@dataclass
class RequestRecord:
    """One request as the origin saw it."""

    method: str
    path: str
    query: str
    range: str | None
    status: int
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Rules:
    fail_status: int | None = None
    fail_times: int | None = None  # None: every request fails
    retry_after: str | None = None
    redirect: bool = False
    throttle: int = 0
    cut_at: int | None = None
    cut_times: int = 0
    omit_content_length: bool = False
    ranges: bool = True


class Origin:
    """A real HTTP/1.1 server on 127.0.0.1 that serves files from `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._rules: dict[str, _Rules] = {}
        self._bytes: dict[str, int] = {}
        self._requests: dict[str, list[RequestRecord]] = {}
        self._active: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="origin", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str, *, signed: bool = False) -> str:
        """Return the URL of `path`; `signed` adds fresh signature-like query parameters."""
        url = self.base_url + path
        return url + "?" + signed_query() if signed else url

    def start(self) -> Origin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Behaviours. Each replaces the earlier one of its kind on that path.

    def fail(self, path: str, status: int, *, times: int | None = None, retry_after: float | None = None) -> None:
        """Respond with `status` (and `Retry-After` when given) to the next `times` requests, or to all."""
        rules = self._rules_of(path)
        rules.fail_status, rules.fail_times = status, times
        rules.retry_after = None if retry_after is None else f"{retry_after:g}"

    def redirect(self, path: str) -> None:
        """Respond with 307 to a signed-looking URL of the same path, with a new signature each time."""
        self._rules_of(path).redirect = True

    def throttle(self, path: str, bytes_per_second: int) -> None:
        """Send each response body at about `bytes_per_second`."""
        self._rules_of(path).throttle = bytes_per_second

    def cut(self, path: str, *, at: int, times: int = 1) -> None:
        """Close the connection just before sending the byte at file offset `at`, `times` times.

        Only a response whose range covers `at` is cut, so with parallel
        ranges the cut hits the one request that reaches that offset.
        """
        rules = self._rules_of(path)
        rules.cut_at, rules.cut_times = at, times

    def omit_content_length(self, path: str) -> None:
        """Send full bodies without Content-Length; the end of the body is the end of the connection."""
        self._rules_of(path).omit_content_length = True

    def disable_ranges(self, path: str) -> None:
        """Ignore `Range` and send no `Accept-Ranges`, as an origin without range support does."""
        self._rules_of(path).ranges = False

    def reset(self, path: str) -> None:
        """Forget the behaviours of `path`, keeping its counters."""
        with self._lock:
            self._rules.pop(path, None)

    # Counters.

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for `path` so far, over all requests."""
        with self._lock:
            return self._bytes.get(path, 0)

    def requests(self, path: str) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests.get(path, []))

    def max_concurrent(self, path: str) -> int:
        """The largest number of responses for `path` that were being sent at one time."""
        with self._lock:
            return self._peak.get(path, 0)

    # Internals used by the handler.

    def _rules_of(self, path: str) -> _Rules:
        with self._lock:
            return self._rules.setdefault(path, _Rules())

    def _take_failure(self, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            rules = self._rules.get(path)
            if rules is None or rules.fail_status is None:
                return None
            if rules.fail_times is not None:
                if rules.fail_times <= 0:
                    return None
                rules.fail_times -= 1
            return rules.fail_status, rules.retry_after

    def _take_cut(self, path: str) -> bool:
        with self._lock:
            rules = self._rules.get(path)
            if rules is None or rules.cut_times <= 0:
                return False
            rules.cut_times -= 1
            return True

    def _snapshot(self, path: str) -> _Rules:
        with self._lock:
            rules = self._rules.get(path)
            return _Rules(**vars(rules)) if rules else _Rules()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.setdefault(record.path, []).append(record)

    def _count(self, path: str, sent: int) -> None:
        with self._lock:
            self._bytes[path] = self._bytes.get(path, 0) + sent

    def _enter(self, path: str) -> None:
        with self._lock:
            self._active[path] = self._active.get(path, 0) + 1
            self._peak[path] = max(self._peak.get(path, 0), self._active[path])

    def _leave(self, path: str) -> None:
        with self._lock:
            self._active[path] -= 1


def signed_query() -> str:
    """Return query parameters shaped like an S3 presigned URL's, different on every call."""
    return (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Date={time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        "&X-Amz-Expires=300"
        f"&{SIGNATURE_PARAMETER}={secrets.token_hex(32)}"
    )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single `bytes=` range into [start, end); None when it cannot be satisfied.

    A header with several ranges or another unit raises ValueError, and the
    caller then sends the whole file: an HTTP server may ignore Range.
    """
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise ValueError(header)
    first, _, last = spec.strip().partition("-")
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        return None
    return start, end


def _make_handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the tests read the request records instead

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parts.query
            range_header = self.headers.get("Range")
            rules = origin._snapshot(path)

            failure = origin._take_failure(path)
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": retry_after} if retry_after else {}
                self._reply_empty(path, query, range_header, status, headers)
                return

            if rules.redirect and SIGNATURE_PARAMETER not in query:
                location = f"{path}?{signed_query()}"
                self._reply_empty(path, query, range_header, 307, {"Location": location})
                return

            file = (origin.root / path.lstrip("/")).resolve()
            if not file.is_relative_to(origin.root.resolve()) or not file.is_file():
                self._reply_empty(path, query, range_header, 404, {})
                return

            size = file.stat().st_size
            start, end, status = 0, size, 200
            headers: dict[str, str] = {}
            if rules.ranges:
                headers["Accept-Ranges"] = "bytes"
                if range_header:
                    try:
                        span = parse_range(range_header, size)
                    except ValueError:
                        span = (0, size)
                    else:
                        if span is None:
                            headers["Content-Range"] = f"bytes */{size}"
                            self._reply_empty(path, query, range_header, 416, headers)
                            return
                        status = 206
                        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
                    start, end = span

            close = rules.omit_content_length
            if close:
                headers["Connection"] = "close"
            else:
                headers["Content-Length"] = str(end - start)

            origin._record(RequestRecord(self.command, path, query, range_header, status))
            self.send_response(status)
            headers["Content-Type"] = "application/octet-stream"
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not body:
                return

            cut_at = rules.cut_at if rules.cut_at is not None and start < rules.cut_at < end else None
            origin._enter(path)
            try:
                self._send_body(path, file, start, end, rules.throttle, cut_at)
            finally:
                origin._leave(path)
            if close:
                self.close_connection = True

        def _send_body(
            self, path: str, file: Path, start: int, end: int, throttle: int, cut_at: int | None
        ) -> None:
            began = time.monotonic()
            sent = 0
            with open(file, "rb") as source:
                source.seek(start)
                while start + sent < end:
                    size = min(CHUNK, end - start - sent)
                    if cut_at is not None:
                        if start + sent == cut_at and origin._take_cut(path):
                            self._cut()
                            return
                        if start + sent < cut_at:
                            size = min(size, cut_at - start - sent)
                    data = source.read(size)
                    try:
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        return
                    sent += len(data)
                    origin._count(path, len(data))
                    if throttle:
                        # Sleep until the bytes sent so far match the rate.
                        delay = sent / throttle - (time.monotonic() - began)
                        if delay > 0:
                            time.sleep(delay)

        def _cut(self) -> None:
            # Shut the socket down mid-body, as a dropped connection looks to the client.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

        def _reply_empty(
            self, path: str, query: str, range_header: str | None, status: int, headers: dict[str, str]
        ) -> None:
            origin._record(RequestRecord(self.command, path, query, range_header, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
