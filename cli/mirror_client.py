"""Fetching through the host's `p2p-mirror`, so every download of a host shares its session and limits."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import httpx

from cli.fetching import (
    FetchError,
    FetchOptions,
    FetchSummary,
    FetchTimedOut,
    IntegrityFailed,
    OriginFailed,
    ProgressCallback,
)
from core.tasks import API_PREFIX
from swarm import TaskProgress

log = logging.getLogger(__name__)

DEFAULT_MIRROR_URL = "http://127.0.0.1:65001"

# A mirror on this host responds to its health check in milliseconds. A longer
# wait means there is none, so p2p-fetch runs its own session instead.
_PROBE_TIMEOUT_SECONDS = 0.5



class MirrorUnavailable(FetchError):
    """The mirror named with --mirror does not respond."""


def mirror_is_running(mirror_url: str) -> bool:
    """Return whether a p2p-mirror responds to its health check at `mirror_url`."""
    try:
        return httpx.get(f"{mirror_url.rstrip('/')}/healthz", timeout=_PROBE_TIMEOUT_SECONDS).status_code == 200
    except httpx.HTTPError:
        return False


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or f"status {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return "; ".join(str(item.get("message", item)) for item in body["errors"] if isinstance(item, dict))
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


def _raise_for_status(response: httpx.Response, url: str) -> None:
    if response.status_code == 200:
        return
    message = f"the mirror could not fetch {url}: {_error_message(response)}"
    if "digest mismatch" in message:
        raise IntegrityFailed(message)
    if response.status_code == 504:
        raise FetchTimedOut(message)
    if response.status_code in (400, 422):
        raise FetchError(message)
    raise OriginFailed(message)


def fetch_via_mirror(
    options: FetchOptions, mirror_url: str, on_progress: ProgressCallback | None = None
) -> FetchSummary:
    """Fetch `options.url` through the mirror into `options.output`, verified, by an atomic rename."""
    started = time.monotonic()
    output = options.output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    request = {
        "url": options.url,
        "digest": str(options.digest) if options.digest else None,
        "headers": options.headers,
        "upload_limit": options.upload_limit,
        "download_limit": options.download_limit,
    }

    descriptor, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    hasher = hashlib.sha256()
    received = 0
    size: int | None = None
    try:
        with os.fdopen(descriptor, "wb") as file:
            try:
                with httpx.stream(
                    "POST", f"{mirror_url.rstrip('/')}{API_PREFIX}/fetch", json=request,
                    timeout=httpx.Timeout(30.0, read=options.timeout),
                ) as response:
                    if response.status_code != 200:
                        response.read()
                    _raise_for_status(response, options.url)
                    size = int(response.headers.get("Content-Length", 0)) or None

                    for chunk in response.iter_bytes():
                        file.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        if time.monotonic() - started > options.timeout:
                            raise FetchTimedOut(
                                f"download of {options.url} through the mirror timed out after {options.timeout:.0f} s"
                            )
                        if on_progress:
                            on_progress(_progress(received, size or received, started))
            except httpx.ConnectError:
                raise MirrorUnavailable(f"p2p-mirror at {mirror_url} unreachable; start it or pass --no-mirror") from None
            except httpx.TimeoutException:
                raise FetchTimedOut(f"download of {options.url} through the mirror timed out") from None
            except httpx.HTTPError as error:
                # The mirror holds back a blob's last byte until the content
                # matches its digest, and aborts the response when it does not:
                # an abort one byte short is a digest mismatch. Any short body
                # is discarded, never taken as the file.
                # NOTE: bytes that arrive together with the close can be lost
                # to httpx, so a mismatch may also show as a plain abort (exit 1).
                if size is not None and received == size - 1:
                    raise IntegrityFailed(
                        f"digest mismatch: the mirror aborted {options.url} before its last byte "
                        f"because the content does not match {options.digest or 'its digest'}"
                    ) from None
                raise FetchError(f"the mirror aborted the download of {options.url}: {error}") from None

        if size is not None and received != size:
            raise FetchError(f"the mirror sent {received} of {size} bytes of {options.url}")
        actual = hasher.hexdigest()
        if options.digest and actual != options.digest.hex:
            raise IntegrityFailed(f"digest mismatch: expected {options.digest}, got sha256:{actual}")
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

    if on_progress:
        on_progress(_progress(received, received, started, complete=True))
    log.info("fetch through the mirror complete", extra={"url": options.url, "output": str(output)})
    return FetchSummary(
        url=options.url,
        output=str(output),
        size=received,
        seconds=round(time.monotonic() - started, 3),
        bytes_from_seeder=0,
        bytes_from_peers=0,
        info_hash=None,
        via="mirror",
    )


def _progress(received: int, size: int, started: float, complete: bool = False) -> TaskProgress:
    elapsed = max(time.monotonic() - started, 1e-3)
    return TaskProgress(
        size=size, bytes_done=received, download_rate=int(received / elapsed), upload_rate=0,
        peers=0, seeds=0, bytes_from_seeder=0, bytes_from_peers=0, uploaded=0, hash_failures=0,
        complete=complete,
    )
