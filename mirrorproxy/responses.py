"""Blob responses: bytes from a cache file or a running download, streamed from worker threads.

A failed download must never look like a finished response, so the stream
stops without its final ASGI message: uvicorn then closes the connection and
the client sees fewer bytes than Content-Length.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import anyio
from anyio import CapacityLimiter
from starlette.responses import StreamingResponse
from starlette.types import Send

from mirrorproxy.downloads import DownloadFailed
from mirrorproxy.metrics import MirrorMetrics, Source

log = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()


async def iterate_in_threads(iterator: Iterator[T], limiter: CapacityLimiter) -> AsyncIterator[T]:
    """Run each step of a blocking iterator in a worker thread; close it however the loop ends."""
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, iterator, _END, limiter=limiter)
            if item is _END:
                return
            yield item
    finally:
        # Closing runs the iterator's finally blocks, which close its file; it
        # must run even when the client went away and the task is cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(iterator.close, limiter=limiter)


class BlobResponse(StreamingResponse):
    """A streamed blob that counts its bytes by source and aborts the connection when its download fails."""

    def __init__(
        self,
        chunks: AsyncIterator[tuple[bytes, Source]],
        *,
        status_code: int,
        headers: dict[str, str],
        metrics: MirrorMetrics,
        digest: str,
    ):
        super().__init__(chunks, status_code=status_code, headers=headers, media_type="application/octet-stream")
        self._metrics = metrics
        self._digest = digest

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sources: dict[Source, int] = {}
        try:
            async for chunk, source in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._metrics.bytes_served.labels(source).inc(len(chunk))
                sources[source] = sources.get(source, 0) + len(chunk)
        except DownloadFailed as error:
            log.error("aborting a blob response", extra={"digest": self._digest, "error": str(error)})
            return

        await send({"type": "http.response.body", "body": b"", "more_body": False})
        # A response whose bytes came from two sources (a swarm stall in the
        # middle) counts for the source that sent the most.
        main_source = max(sources, key=lambda source: sources[source]) if sources else Source.CACHE
        self._metrics.blobs_served.labels(main_source).inc()


async def with_source(chunks: AsyncIterator[bytes], source: Source) -> AsyncIterator[tuple[bytes, Source]]:
    """Tag every chunk of a single-source stream with its source."""
    async for chunk in chunks:
        yield chunk, source
