"""The read side of the OCI Distribution API under /v2/, as a registry mirror.

Manifests, tags and everything else go to the upstream unchanged. Blob GETs
are authorized against the upstream first, then served from the cache or
through the swarm.
"""

from __future__ import annotations

import logging

import anyio
import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from core.ids import Digest, InvalidValue
from mirrorproxy.cache import CacheEntry
from mirrorproxy.downloads import BlobRequest, DownloadFailed, read_file
from mirrorproxy.metrics import Source
from mirrorproxy.mirror import Mirror
from mirrorproxy.oci import (
    API_VERSION,
    API_VERSION_HEADER,
    BLOB_PATH,
    MANIFEST_PATH,
    NAME_PATTERN,
    REFERENCE_PATTERN,
    RangeNotSatisfiable,
    error_response,
    parse_range,
)
from mirrorproxy.responses import BlobResponse, iterate_in_threads, with_source
from mirrorproxy.upstreams import (
    UnknownUpstream,
    Upstream,
    copy_response_headers,
    credential_headers,
    forward,
    unreachable_response,
)

log = logging.getLogger(__name__)

router = APIRouter()

# Maximum size in bytes of an upstream error body relayed to the client.
_MAX_ERROR_BODY = 64 * 1024

_WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]


def _mirror(request: Request) -> Mirror:
    return request.app.state.mirror


@router.api_route("/v2/{path:path}", methods=_WRITE_METHODS, include_in_schema=False)
async def reject_write(path: str) -> Response:
    return error_response(405, "UNSUPPORTED", "the mirror is read-only; push to the upstream registry")


@router.api_route("/v2/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def read_side(request: Request, path: str) -> Response:
    mirror = _mirror(request)
    try:
        upstream = mirror.upstreams.pick(request.query_params.get("ns"))
    except UnknownUpstream as error:
        return error_response(404, "NAME_UNKNOWN", str(error))

    if path == "":
        return await _ping(mirror, request, upstream)

    manifest = MANIFEST_PATH.match(path)
    blob = BLOB_PATH.match(path)
    match = manifest or blob
    if match and not NAME_PATTERN.match(match["name"]):
        return error_response(400, "NAME_INVALID", f"invalid repository name {match['name']!r}")
    if manifest and not REFERENCE_PATTERN.match(manifest["reference"]):
        return error_response(400, "MANIFEST_INVALID", f"invalid tag or digest {manifest['reference']!r}")

    if blob:
        try:
            digest = Digest.parse(blob["digest"])
        except InvalidValue as error:
            return error_response(400, "DIGEST_INVALID", str(error))
        if request.method == "HEAD":
            return await _head_blob(mirror, request, upstream, path, digest)
        return await _get_blob(mirror, request, upstream, path, digest)

    # Manifests, tags lists, referrers and the rest: the upstream's response, unchanged.
    return await forward(mirror.client, request, upstream, path)


async def _ping(mirror: Mirror, request: Request, upstream: Upstream) -> Response:
    """Return the upstream's status for /v2/, so that a 401 challenge reaches the client before it pulls."""
    response = await forward(mirror.client, request, upstream, "")
    if response.status_code == 200:
        return Response(status_code=200, headers={API_VERSION_HEADER: API_VERSION})
    return response


async def _head_blob(mirror: Mirror, request: Request, upstream: Upstream, path: str, digest: Digest) -> Response:
    entry = mirror.cache.get(str(digest))
    if entry is None:
        return await forward(mirror.client, request, upstream, path)
    return Response(status_code=200, headers=_blob_headers(digest, entry.size))


def _blob_headers(digest: Digest, length: int) -> dict[str, str]:
    return {
        "Content-Length": str(length),
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        API_VERSION_HEADER: API_VERSION,
    }


async def _get_blob(mirror: Mirror, request: Request, upstream: Upstream, path: str, digest: Digest) -> Response:
    url = upstream.url(path)
    credentials = credential_headers(request)

    # Ask the upstream whether this client may read the blob, before any
    # byte is sent, even of a blob the cache or the swarm already has.
    try:
        head = await mirror.client.head(url, headers=credentials, follow_redirects=False)
    except httpx.HTTPError as error:
        return unreachable_response(upstream, error)
    if not (200 <= head.status_code < 400):
        return await _relay_refusal(mirror, request, upstream, url, head)

    length = head.headers.get("content-length")
    size = int(length) if head.status_code == 200 and length and length.isdigit() else None
    blob_request = BlobRequest(key=str(digest), url=url, digest=digest, headers=credentials, size=size)
    return await serve_blob(mirror, request, blob_request)


async def _relay_refusal(
    mirror: Mirror, request: Request, upstream: Upstream, url: str, head: httpx.Response
) -> Response:
    """Return the upstream's refusal (401, 403, 404, ...) with its error body.

    A response to HEAD has no body, so the same GET is sent for it. That GET
    cannot leak blob bytes, because a GET that succeeds is dropped unread.
    """
    log.info(
        "upstream rejected a blob request",
        extra={"upstream": upstream.registry, "url": url, "status": head.status_code},
    )
    try:
        async with mirror.client.stream(
            "GET", url, headers=credential_headers(request), follow_redirects=False
        ) as reply:
            if reply.status_code == head.status_code:
                body = b""
                async for chunk in reply.aiter_raw():
                    body += chunk
                    if len(body) > _MAX_ERROR_BODY:
                        break
                if len(body) <= _MAX_ERROR_BODY:
                    response = Response(content=body, status_code=reply.status_code)
                    copy_response_headers(reply, response)
                    return response
    except httpx.HTTPError as error:
        log.info("fetching the upstream's error body failed", extra={"url": url, "error": repr(error)})

    response = Response(status_code=head.status_code)
    copy_response_headers(head, response)
    response.raw_headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    response.raw_headers.append((b"content-length", b"0"))
    return response


async def serve_blob(mirror: Mirror, request: Request, blob_request: BlobRequest) -> Response:
    """Send a blob from the cache, or from the download that fetches it, honouring Range."""
    opened = await anyio.to_thread.run_sync(mirror.downloader.open, blob_request)
    digest = blob_request.digest

    if isinstance(opened, CacheEntry):
        size = opened.size
    else:
        try:
            size = await anyio.to_thread.run_sync(opened.wait_size, mirror.size_wait_timeout)
        except (DownloadFailed, TimeoutError) as error:
            log.error("blob download failed before any byte", extra={"digest": blob_request.key, "error": str(error)})
            return error_response(502, "UNAVAILABLE", f"fetching {blob_request.key} failed: {error}")

    headers = {
        "Content-Type": "application/octet-stream",
        API_VERSION_HEADER: API_VERSION,
    }
    if digest is not None:
        headers["Docker-Content-Digest"] = str(digest)

    status = 200
    start, end = 0, size
    if size is not None:
        headers["Accept-Ranges"] = "bytes"
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            return error_response(
                416, "RANGE_INVALID", f"range {request.headers.get('range')!r} is outside the blob of {size} bytes",
                headers={"Content-Range": f"bytes */{size}"},
            )
        if byte_range is not None:
            status = 206
            start, end = byte_range.start, byte_range.end
            headers["Content-Range"] = byte_range.content_range(size)
        headers["Content-Length"] = str(end - start)

    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    if isinstance(opened, CacheEntry):
        chunks = with_source(iterate_in_threads(read_file(opened.path, start, end), mirror.limiter), Source.CACHE)
    else:
        chunks = iterate_in_threads(opened.read(start, end), mirror.limiter)
    return BlobResponse(chunks, status_code=status, headers=headers, metrics=mirror.metrics, digest=blob_request.key)
