"""Fetching a file from its origin over HTTP into a temp file, hashing it on the way.

The first request is a GET of the range `bytes=0-0`, which works where a HEAD
may not (a presigned URL is signed for one method):

- 206 with `Content-Range: bytes 0-0/SIZE`: the origin supports ranges, so
  the file is fetched as piece-aligned segments, several at a time, each
  written at its offset into the preallocated temp file. A broken
  connection resumes its segment with a `Range` from the last byte received.
- 416 with `Content-Range: bytes */0`: the file is empty.
- 200: the origin ignores ranges, so that response is the whole body and is
  streamed in order. A broken connection starts it over from the first byte.

Every request follows redirects and goes to the task's URL again rather than
to where it last redirected, since a signed redirect target can expire
during a long download. See `seeder.hashing` for how the pieces and the
sha256 are computed in the same pass.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from seeder.errors import FailureCause, IngestError, redact_url
from seeder.hashing import CandidatePieceHashers, OrderedSha256, PieceHasher, join_digests
from seeder.pieces import CANDIDATE_PIECE_LENGTHS, choose_piece_length, piece_count

log = logging.getLogger(__name__)

# Statuses worth another attempt: the origin or a proxy in front of it is
# overloaded or restarting. Any other 4xx is the request's fault.
RETRYABLE_STATUSES = {408, 429, 500, 502, 503, 504}

# Attempts per segment, counting those that made progress, so that an origin
# cutting every response after a few bytes cannot keep an ingest going forever.
MAX_ATTEMPTS_FACTOR = 10

# The first wait between attempts; each further one doubles, up to retry_max_delay.
FIRST_RETRY_DELAY = 0.5


@dataclass(frozen=True)
class FetchOptions:
    """Timeouts, retries and parallelism of origin requests, from the seeder's settings."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = 5
    retry_max_delay: float = 30.0
    parallel_ranges: int = 4
    segment_size: int = 4 * 1024 * 1024
    hash_buffer: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class FetchResult:
    """The hashes of a fetched file, computed while its bytes arrived."""

    size: int
    sha256: str  # hex
    piece_length: int
    piece_hashes: bytes
    ranged: bool  # whether the file came in parallel ranges


class _RetryLater(Exception):
    """A failed attempt worth retrying, after `delay` seconds when the origin sent Retry-After."""

    def __init__(self, message: str, delay: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.delay = delay
        self.status = status


class _Restart(Exception):
    """The download must start again from the first byte."""


class OriginFetch:
    """One download of `url` into the open file `fd`.

    `on_size(size)` runs once the size is known (before the download when the
    origin sends it, at the end otherwise) and may raise IngestError to stop
    it, for a quota. `on_bytes(count)` runs for every chunk received.
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        fd: int,
        *,
        options: FetchOptions,
        piece_length: int | None = None,
        on_size: Callable[[int], None] = lambda size: None,
        on_bytes: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        self.headers = headers
        self.fd = fd
        self.options = options
        self.requested_piece_length = piece_length
        self.on_size = on_size
        self.on_bytes = on_bytes
        self._stop = threading.Event()
        self._cancelled = False
        self._client = httpx.Client(
            follow_redirects=True,
            # Never take a proxy from the environment: the origin is reached directly.
            trust_env=False,
            timeout=httpx.Timeout(
                connect=options.connect_timeout,
                read=options.read_timeout,
                write=options.read_timeout,
                pool=options.connect_timeout + options.read_timeout,
            ),
            limits=httpx.Limits(max_connections=options.parallel_ranges + 1),
            # The bytes must be the file itself, at the offsets Range refers to.
            headers={"Accept-Encoding": "identity"},
        )

    def cancel(self) -> None:
        """Stop the download at its next chunk or wait; `run` then raises IngestError."""
        self._cancelled = True
        self._stop.set()

    def run(self) -> FetchResult:
        try:
            return self._run()
        except httpx.TooManyRedirects:
            raise IngestError(
                f"origin redirected {self.shown_url} too many times (more than 20)", FailureCause.ORIGIN_PROTOCOL
            ) from None
        except httpx.InvalidURL as error:
            raise IngestError(f"invalid URL {self.shown_url}: {error}", FailureCause.INVALID_REQUEST) from None
        except httpx.UnsupportedProtocol:
            raise IngestError(
                f"unsupported URL {self.shown_url}: only http:// and https:// are supported",
                FailureCause.INVALID_REQUEST,
            ) from None
        except httpx.HTTPError as error:
            raise IngestError(
                f"request to origin {self.shown_url} failed: {_describe(error)}", FailureCause.ORIGIN_PROTOCOL
            ) from None
        finally:
            self._client.close()

    def _run(self) -> FetchResult:
        # Each restart fetches the whole body again, so restarts get the
        # plain attempt count, not the larger budget of ranged resumes.
        for _ in range(self.options.attempts):
            try:
                return self._probe_and_fetch()
            except _Restart as restart:
                log.warning("restarting the download from the first byte", extra={"url": self.shown_url, "error": str(restart)})
        raise IngestError(
            f"origin {self.shown_url} broke the connection of every download; gave up after "
            f"{self.options.attempts} attempts (it does not support Range, so each attempt starts over)",
            FailureCause.ORIGIN_UNREACHABLE,
        )

    def _probe_and_fetch(self) -> FetchResult:
        request_headers = {**self.headers, "Range": "bytes=0-0"}
        with self._retrying_stream(request_headers, accepted=(200, 206, 416)) as response:
            if response.status_code == 416:
                total = _parse_content_range_total(response.headers.get("Content-Range"))
                if total == 0:
                    return self._empty()
                raise IngestError(
                    f"origin returned 416 for {self.shown_url} to Range: bytes=0-0 "
                    f"(Content-Range: {response.headers.get('Content-Range')!r})",
                    FailureCause.ORIGIN_PROTOCOL,
                )
            if response.status_code == 206:
                content_range = response.headers.get("Content-Range", "")
                size = _parse_content_range_total(content_range)
                # Anything but the one byte requested could be a whole file
                # read into memory here.
                if size is None or not content_range.startswith("bytes 0-0/"):
                    raise IngestError(
                        f"origin returned 206 for {self.shown_url} without a valid Content-Range "
                        f"({response.headers.get('Content-Range')!r})",
                        FailureCause.ORIGIN_PROTOCOL,
                    )
                # The probe's byte is thrown away: the first segment fetches it again.
                self.on_bytes(len(response.read()))
            else:
                return self._fetch_stream(response)
        return self._fetch_ranges(size)

    def _empty(self) -> FetchResult:
        self.on_size(0)
        piece_length = self.requested_piece_length or choose_piece_length(0)
        return FetchResult(0, hashlib.sha256().hexdigest(), piece_length, b"", ranged=False)

    # Parallel ranges.

    def _fetch_ranges(self, size: int) -> FetchResult:
        self.on_size(size)
        _allocate(self.fd, size)
        if size == 0:
            return self._empty()

        piece_length = self.requested_piece_length or choose_piece_length(size)
        segment = -(-self.options.segment_size // piece_length) * piece_length
        segments = [(start, min(size, start + segment)) for start in range(0, size, segment)]
        digests: list[bytes | None] = [None] * piece_count(size, piece_length)
        # The buffer must hold at least one segment, or no segment but the
        # first could ever start.
        sha256 = OrderedSha256(max(self.options.hash_buffer, segment))

        workers = min(self.options.parallel_ranges, len(segments))
        queue = iter(segments)
        queue_lock = threading.Lock()
        log.info(
            "fetching in ranges",
            extra={"url": self.shown_url, "bytes": size, "piece_length": piece_length, "segments": len(segments), "connections": workers},
        )

        def work() -> None:
            while not self._stop.is_set():
                with queue_lock:
                    span = next(queue, None)
                if span is None:
                    return
                start, end = span
                if not sha256.wait_for_room(end):
                    return
                hasher = PieceHasher(piece_length, digests, start // piece_length)
                self._fetch_segment(start, end, size, hasher, sha256)
                hasher.finish()

        with ThreadPoolExecutor(workers, thread_name_prefix="range") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [future.exception() for future in done if future.exception() is not None]
            if errors:
                # Stop the other workers at their next chunk or wait.
                self._stop.set()
                sha256.abort()
                wait(futures)
                raise errors[0]  # type: ignore[misc]

        self._check_cancelled()
        return FetchResult(size, sha256.hexdigest(size), piece_length, join_digests(digests), ranged=True)

    def _fetch_segment(self, start: int, end: int, size: int, hasher: PieceHasher, sha256: OrderedSha256) -> None:
        position = start
        stalled = 0
        for _ in range(self.options.attempts * MAX_ATTEMPTS_FACTOR):
            self._check_cancelled()
            before = position
            try:
                with self._stream({**self.headers, "Range": f"bytes={position}-{end - 1}"}) as response:
                    _raise_for_retry(response, self.shown_url)
                    self._check_range_response(response, position, end, size)
                    for chunk in response.iter_raw():
                        self._check_cancelled()
                        if position + len(chunk) > end:
                            raise IngestError(
                                f"origin sent more than the {end - start} bytes requested from {self.shown_url}",
                                FailureCause.ORIGIN_PROTOCOL,
                            )
                        _write_at(self.fd, chunk, position)
                        hasher.update(chunk)
                        sha256.feed(position, chunk)
                        position += len(chunk)
                        self.on_bytes(len(chunk))
                if position == end:
                    return
                raise _RetryLater(f"response ended at byte {position} of {end}")
            except (httpx.TransportError, _RetryLater) as error:
                if position > before:
                    stalled = 0
                stalled += 1
                if stalled >= self.options.attempts:
                    raise self._give_up(error, stalled) from None
                delay = self._retry_delay(error, stalled)
                log.warning(
                    "origin request failed, resuming",
                    extra={"url": self.shown_url, "error": _describe(error), "offset": position, "retry_in": round(delay, 2)},
                )
                self._sleep(delay)
        raise self._give_up(None, self.options.attempts * MAX_ATTEMPTS_FACTOR)

    def _check_range_response(self, response: httpx.Response, start: int, end: int, size: int) -> None:
        if response.status_code != 206:
            raise IngestError(
                f"origin returned {response.status_code} for {self.shown_url} to Range: bytes={start}-{end - 1}, "
                "after it had answered ranges with 206; was the file replaced during the download?",
                FailureCause.ORIGIN_PROTOCOL,
            )
        content_range = response.headers.get("Content-Range", "")
        expected = f"bytes {start}-{end - 1}/{size}"
        if content_range != expected:
            raise IngestError(
                f"origin sent Content-Range {content_range!r} for {self.shown_url}, expected {expected!r}; "
                "was the file replaced during the download?",
                FailureCause.ORIGIN_PROTOCOL,
            )

    # One stream in order.

    def _fetch_stream(self, response: httpx.Response) -> FetchResult:
        """Stream a 200 response's body; a break raises _Restart, since the origin has no ranges."""
        length = response.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        if size is not None:
            self.on_size(size)
            _allocate(self.fd, size)
        # NOTE: without a size, the quota is checked only at the end of the
        # body; until then only a full disk stops a body larger than the quota.
        os.ftruncate(self.fd, size or 0)

        if self.requested_piece_length or size is not None:
            piece_length = self.requested_piece_length or choose_piece_length(size)  # type: ignore[arg-type]
            hashers: PieceHasher | CandidatePieceHashers = PieceHasher(piece_length, [])
        else:
            hashers = CandidatePieceHashers(CANDIDATE_PIECE_LENGTHS, choose_piece_length)
        sha256 = OrderedSha256(0)
        log.info("fetching in one stream", extra={"url": self.shown_url, "bytes": size if size is not None else "unknown"})

        position = 0
        try:
            for chunk in response.iter_raw():
                self._check_cancelled()
                if size is not None and position + len(chunk) > size:
                    raise IngestError(
                        f"origin sent more than its Content-Length of {size} bytes for {self.shown_url}",
                        FailureCause.ORIGIN_PROTOCOL,
                    )
                _write_at(self.fd, chunk, position)
                hashers.update(chunk)
                sha256.feed(position, chunk)
                position += len(chunk)
                self.on_bytes(len(chunk))
        except httpx.TransportError as error:
            log.warning("origin connection broke", extra={"url": self.shown_url, "error": _describe(error), "offset": position})
            self._sleep(FIRST_RETRY_DELAY)
            raise _Restart(_describe(error)) from None
        if size is not None and position != size:
            raise _Restart(f"body ended at byte {position} of {size}")

        if size is None:
            # NOTE: without Content-Length, a connection cut halfway looks
            # like the end of the body; only a known digest catches it.
            size = position
            self.on_size(size)
        if isinstance(hashers, PieceHasher):
            hashers.finish()
            piece_length, pieces = hashers.piece_length, join_digests(hashers.digests)
        else:
            piece_length, pieces = hashers.finish()
        return FetchResult(size, sha256.hexdigest(size), piece_length, pieces, ranged=False)

    # Requests and retries.

    def _stream(self, headers: dict[str, str]):
        return self._client.stream("GET", self.url, headers=headers)

    @contextmanager
    def _retrying_stream(
        self, headers: dict[str, str], accepted: tuple[int, ...] = (200, 206)
    ) -> Iterator[httpx.Response]:
        """Open a response, retrying retryable statuses and connection errors.

        Errors raised while the caller reads the body are not retried here.
        """
        for attempt in range(1, self.options.attempts + 1):
            self._check_cancelled()
            opened = False
            try:
                with self._stream(headers) as response:
                    _raise_for_retry(response, self.shown_url, accepted)
                    opened = True
                    yield response
                    return
            except (httpx.TransportError, _RetryLater) as error:
                if opened:
                    raise
                if attempt == self.options.attempts:
                    raise self._give_up(error, attempt) from None
                delay = self._retry_delay(error, attempt)
                log.warning(
                    "origin request failed, retrying",
                    extra={"url": self.shown_url, "error": _describe(error), "attempt": attempt, "retry_in": round(delay, 2)},
                )
                self._sleep(delay)

    def _retry_delay(self, error: Exception, attempt: int) -> float:
        backoff = min(self.options.retry_max_delay, FIRST_RETRY_DELAY * 2 ** (attempt - 1))
        if isinstance(error, _RetryLater) and error.delay is not None:
            if error.delay > self.options.retry_max_delay:
                raise IngestError(
                    f"origin returned {error.status} for {self.shown_url} with Retry-After of {error.delay:g} s, "
                    f"longer than retry_max_delay ({self.options.retry_max_delay:g} s)",
                    FailureCause.ORIGIN_STATUS,
                )
            return error.delay
        return backoff

    def _give_up(self, error: Exception | None, attempts: int) -> IngestError:
        if isinstance(error, _RetryLater) and error.status is not None:
            return IngestError(
                f"origin returned {error.status} for {self.shown_url} after {attempts} attempts",
                FailureCause.ORIGIN_STATUS,
            )
        return IngestError(
            f"origin {self.shown_url} failed after {attempts} attempts: {_describe(error)}",
            FailureCause.ORIGIN_UNREACHABLE,
        )

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            self._check_cancelled()

    def _check_cancelled(self) -> None:
        # _stop is also set when another range worker failed; that worker's
        # error is the one reported, and this one is dropped.
        if self._stop.is_set():
            reason = "was cancelled" if self._cancelled else "stopped after another range failed"
            raise IngestError(f"download of {self.shown_url} {reason}", FailureCause.CANCELLED)


def _raise_for_retry(response: httpx.Response, shown_url: str, accepted: tuple[int, ...] = (200, 206)) -> None:
    """Raise _RetryLater for a retryable status and IngestError for any other status not `accepted`."""
    status = response.status_code
    if status in accepted:
        return
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        raise _RetryLater(f"origin returned {status}", _retry_after(response), status)
    if status >= 400:
        raise IngestError(f"origin returned {status} for {shown_url}", FailureCause.ORIGIN_STATUS)
    raise IngestError(
        f"origin returned {status} for {shown_url}, expected one of {', '.join(map(str, accepted))}",
        FailureCause.ORIGIN_STATUS,
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Return the seconds of a `Retry-After` header (delay or HTTP date), None when absent or invalid."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _parse_content_range_total(header: str | None) -> int | None:
    """Return the complete length of `Content-Range: bytes A-B/TOTAL` or `bytes */TOTAL`."""
    if not header:
        return None
    unit, _, rest = header.strip().partition(" ")
    total = rest.rpartition("/")[2]
    if unit != "bytes" or not total.isdigit():
        return None
    return int(total)


def _allocate(fd: int, size: int) -> None:
    """Reserve `size` bytes for the file now, so a full disk fails the ingest before the download."""
    if size == 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise IngestError(
                f"no space left on device for {size} bytes in the seeder's data directory",
                FailureCause.DISK,
            ) from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise IngestError(f"cannot allocate {size} bytes for the download: {error}", FailureCause.DISK) from None
        # The file system cannot preallocate (tmpfs on old kernels, some
        # network file systems): a full disk then shows up at a write.
        os.ftruncate(fd, size)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise IngestError(
                "no space left on device in the seeder's data directory while writing the download",
                FailureCause.DISK,
            ) from None
        raise IngestError(f"writing the download failed: {error}", FailureCause.DISK) from None


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no response"
    text = str(error) or "no details"
    return f"{type(error).__name__}: {text}" if isinstance(error, httpx.HTTPError) else text
