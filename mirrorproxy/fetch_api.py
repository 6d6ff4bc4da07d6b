"""The local fetch API: `p2p-fetch` downloads through the host's mirror, sharing its session and limits.

POST /api/v1/fetch with a FetchRequest:
- with `output`, the mirror writes the file there (complete and verified,
  then renamed into place) and returns a FetchResult;
- without it, the response body is the content itself, aborted mid-way if
  the download fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from core.host_config import parse_limit
from core.ids import Digest, InvalidValue
from core.tasks import API_PREFIX
from mirrorproxy.cache import CacheEntry
from mirrorproxy.downloads import BlobRequest, Download, DownloadFailed
from mirrorproxy.metrics import Source
from mirrorproxy.mirror import Mirror
from mirrorproxy.registry_api import serve_blob

log = logging.getLogger(__name__)

router = APIRouter()

FETCH_PATH = f"{API_PREFIX}/fetch"


class FetchRequest(BaseModel):
    """A download that `p2p-fetch` hands to the host's mirror."""

    url: str = Field(description="HTTP(S) URL of the content at the origin")
    digest: str | None = Field(default=None, description="sha256:<hex> of the content, when known")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers the origin needs (credentials); never logged"
    )
    output: str | None = Field(
        default=None,
        description="absolute path the mirror writes the file to; without it the content is the response body",
    )
    upload_limit: int | str = Field(
        default=0,
        description="upload limit of this download in bytes/s or with a unit (50MiB/s); "
        "it only lowers the host's task_upload_limit; 0 for none",
    )
    download_limit: int | str = Field(
        default=0,
        description="download limit of this download, like upload_limit; it only lowers task_download_limit",
    )


class FetchResult(BaseModel):
    """The path, size, digest and source of a fetched file."""

    path: str
    size: int
    sha256: str = Field(description="sha256:<hex> of the file")
    source: Source = Field(description="where the bytes came from: cache, swarm or upstream")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def blob_request(fetch: FetchRequest) -> BlobRequest:
    """Validate a fetch request; raise InvalidValue naming the bad field."""
    parts = urlsplit(fetch.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"invalid url {fetch.url!r}: expected an http:// or https:// URL")
    digest = Digest.parse(fetch.digest) if fetch.digest else None
    key = str(digest) if digest else "url:" + hashlib.sha256(fetch.url.encode()).hexdigest()
    return BlobRequest(
        key=key,
        url=fetch.url,
        digest=digest,
        headers=fetch.headers,
        upload_limit=parse_limit(fetch.upload_limit, "upload_limit"),
        download_limit=parse_limit(fetch.download_limit, "download_limit"),
    )


@router.post(FETCH_PATH, response_model=FetchResult)
async def fetch(request: Request, body: FetchRequest) -> Response:
    mirror: Mirror = request.app.state.mirror
    try:
        blob = blob_request(body)
    except InvalidValue as error:
        return _error(400, str(error))

    if body.output is None:
        return await serve_blob(mirror, request, blob)

    output = Path(body.output)
    if not output.is_absolute():
        return _error(400, f"invalid output {body.output!r}: expected an absolute path")
    if not output.parent.is_dir():
        return _error(400, f"invalid output {body.output!r}: directory {str(output.parent)!r} not found")

    opened = await anyio.to_thread.run_sync(mirror.downloader.open, blob)
    try:
        result = await anyio.to_thread.run_sync(_write_output, mirror, opened, output, abandon_on_cancel=True)
    except DownloadFailed as error:
        return _error(502, f"fetching {body.url} failed: {error}")
    except TimeoutError as error:
        return _error(504, str(error))
    except OSError as error:
        return _error(400, f"cannot write output {body.output!r}: {error.strerror or error}")
    log.info("fetched to a file", extra={"url": body.url, "path": str(output), "bytes": result.size})
    return JSONResponse(result.model_dump(mode="json"))


def _write_output(mirror: Mirror, opened: CacheEntry | Download, output: Path) -> FetchResult:
    """Wait for the download, then copy the file next to `output` and rename it into place."""
    if isinstance(opened, Download):
        opened.wait_done(mirror.size_wait_timeout + mirror.settings.upstream_read_timeout)
        entry = mirror.cache.get(opened.key)
        source = opened.source
        sha256 = opened.sha256
        if entry is None:
            raise DownloadFailed(f"{opened.key} was evicted from the cache before it could be copied")
    else:
        entry = opened
        source = Source.CACHE
        sha256 = entry.key.partition(":")[2]

    # A copy, not a link: a change to the output must not corrupt the cache.
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    os.close(descriptor)
    try:
        shutil.copyfile(entry.path, temporary)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

    mirror.metrics.blobs_served.labels(source).inc()
    mirror.metrics.bytes_served.labels(source).inc(entry.size)
    return FetchResult(path=str(output), size=entry.size, sha256=f"sha256:{sha256}", source=source)
