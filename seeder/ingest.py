"""One ingest: fetch a task's content from the origin, verify it and put it in the cache."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from core.ids import Digest, InvalidValue
from core.tasks import IngestRequest
from seeder.cache import Cache, CachedFile
from seeder.errors import FailureCause, IngestError, redact_url
from seeder.metainfo import announce_url_of, build_metainfo, with_announce
from seeder.origin import FetchOptions, OriginFetch
from seeder.pieces import check_requested_piece_length

log = logging.getLogger(__name__)


class Ingest:
    """Fetch `request.url` into the cache and build its metainfo; `run` returns the cached file.

    Content that is cached already (same digest, or the same task before) is
    not fetched again. A failure raises IngestError and leaves nothing in the
    cache.
    """

    def __init__(
        self,
        request: IngestRequest,
        cache: Cache,
        options: FetchOptions,
        *,
        on_bytes: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.request = request
        self.cache = cache
        self.options = options
        self.on_bytes = on_bytes
        self._fetch: OriginFetch | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()
        if self._fetch is not None:
            self._fetch.cancel()

    def run(self) -> CachedFile:
        request = self.request
        digest, piece_length = validate(request)

        known = digest.hex if digest is not None else self.cache.task_content(request.task_id)
        cached = self.cache.get(known) if known else None
        if cached is not None:
            log.info("content already cached", extra={"task_id": request.task_id, "digest": f"sha256:{known}"})
            return self._finish(cached)

        key = secrets.token_hex(8)
        temp_path = self.cache.new_temp_file()
        try:
            cached = self._download(key, temp_path, digest, piece_length)
        except OSError as error:
            raise IngestError(f"writing to the seeder's data directory failed: {error}", FailureCause.DISK) from None
        finally:
            # After a commit the temp file is gone; after a failure this removes it.
            temp_path.unlink(missing_ok=True)
            self.cache.release(key)
        return self._finish(cached)

    def _download(self, key: str, temp_path: Path, digest: Digest | None, piece_length: int | None) -> CachedFile:
        request = self.request
        fd = os.open(temp_path, os.O_RDWR)
        try:
            self._fetch = OriginFetch(
                request.url,
                request.headers,
                fd,
                options=self.options,
                piece_length=piece_length,
                on_size=lambda size: self.cache.reserve(key, size),
                on_bytes=self.on_bytes,
            )
            if self._cancelled.is_set():
                self._fetch.cancel()
            result = self._fetch.run()
            # The file must be on disk before it is renamed into the cache,
            # or a crash could leave a cached file with holes.
            os.fdatasync(fd)
        finally:
            os.close(fd)

        if digest is not None and result.sha256 != digest.hex:
            raise IngestError(
                f"digest mismatch: expected {digest}, got sha256:{result.sha256} "
                f"for {redact_url(request.url)} ({result.size} bytes)",
                FailureCause.DIGEST_MISMATCH,
            )

        metainfo = build_metainfo(
            name=result.sha256,
            size=result.size,
            piece_length=result.piece_length,
            piece_hashes=result.piece_hashes,
            announce_url=request.announce_url,
        )
        cached = self.cache.commit(key, temp_path, result.sha256, metainfo)
        log.info(
            "ingest downloaded",
            extra={
                "task_id": request.task_id,
                "digest": f"sha256:{result.sha256}",
                "bytes": result.size,
                "piece_length": result.piece_length,
                "ranged": result.ranged,
            },
        )
        return cached

    def _finish(self, cached: CachedFile) -> CachedFile:
        """Record the task's content and make its torrent announce to the request's announce URL."""
        self.cache.remember_task(self.request.task_id, cached.sha256)
        if announce_url_of(cached.metainfo) != self.request.announce_url:
            self.cache.replace_metainfo(cached.sha256, with_announce(cached.metainfo, self.request.announce_url))
        self.cache.touch(cached.sha256)
        return self.cache.get(cached.sha256) or cached


def validate(request: IngestRequest) -> tuple[Digest | None, int | None]:
    """Check what the fetch relies on; raise IngestError naming the bad value."""
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IngestError(
            f"invalid URL {redact_url(request.url)!r}: expected an http:// or https:// URL",
            FailureCause.INVALID_REQUEST,
        )
    try:
        digest = Digest.parse(request.digest) if request.digest else None
        piece_length = (
            check_requested_piece_length(request.piece_length) if request.piece_length is not None else None
        )
    except InvalidValue as error:
        raise IngestError(str(error), FailureCause.INVALID_REQUEST) from None
    return digest, piece_length
