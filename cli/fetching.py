"""Download one URL through the swarm into a file that appears only when complete and verified."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bencodepy

from cli.task_client import TaskClient
from core.host_config import HostConfig
from core.ids import Digest
from core.tasks import TaskRequest, TaskState
from swarm import Session, SwarmError, SwarmSettings, TaskProgress

log = logging.getLogger(__name__)


class FetchError(Exception):
    """Base of the errors `p2p-fetch` turns into exit codes."""


class OriginFailed(FetchError):
    """The seeder could not fetch the URL from the origin (404, 5xx, unreachable)."""


class IntegrityFailed(FetchError):
    """The content does not match its digest."""


class FetchTimedOut(FetchError):
    """The download did not finish within --timeout."""


@dataclass
class FetchOptions:
    url: str
    output: Path
    tracker_url: str
    digest: Digest | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0
    seed_time: float = 0.0
    token: str | None = None
    listen_interfaces: str = "0.0.0.0:0"
    # Limits of this fetch in bytes/s, 0 for none; they only lower the host's per-task limits.
    download_limit: int = 0
    upload_limit: int = 0
    # The host's limits, for a session of p2p-fetch's own; the mirror applies its own copy.
    host_config: HostConfig = field(default_factory=HostConfig)


@dataclass
class FetchSummary:
    url: str
    output: str
    size: int
    seconds: float
    bytes_from_seeder: int
    bytes_from_peers: int
    info_hash: str | None
    via: str = "session"  # "session": this process's own swarm session; "mirror": the host's p2p-mirror

    def as_json(self) -> dict:
        return self.__dict__.copy()


ProgressCallback = Callable[[TaskProgress], None]


def _content_sha256(metainfo: bytes) -> tuple[int, str | None]:
    """Return the file size and, when the seeder named the file by it, the content's sha256."""
    info = bencodepy.decode(metainfo)[b"info"]
    name = info[b"name"].decode(errors="replace")
    is_sha256 = len(name) == 64 and all(ch in "0123456789abcdef" for ch in name)
    return info[b"length"], (name if is_sha256 else None)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch(options: FetchOptions, on_progress: ProgressCallback | None = None) -> FetchSummary:
    """Fetch `options.url` through the swarm into `options.output`.

    The output path is written only by an atomic rename of a verified file,
    so a failure of any kind leaves nothing there.
    """
    started = time.monotonic()
    client = TaskClient(options.tracker_url, options.token)
    try:
        request = TaskRequest(
            url=options.url,
            digest=str(options.digest) if options.digest else None,
            headers=options.headers,
        )
        try:
            task = client.wait_ready(request, options.timeout)
        except TimeoutError as error:
            raise FetchTimedOut(str(error)) from None
        if task.state == TaskState.FAILED:
            error = task.error or "unknown error"
            if error.startswith("digest mismatch"):
                raise IntegrityFailed(f"{options.url}: {error}")
            raise OriginFailed(f"{options.url}: {error}")
        metainfo = client.metainfo(task)
    finally:
        client.close()

    size, content_sha256 = _content_sha256(metainfo)
    expected = options.digest.hex if options.digest else content_sha256
    if options.digest and content_sha256 and content_sha256 != options.digest.hex:
        raise IntegrityFailed(
            f"digest mismatch: expected {options.digest}, the swarm has sha256:{content_sha256}"
        )

    output = options.output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    remaining = options.timeout - (time.monotonic() - started)

    if size == 0:
        # A BitTorrent swarm cannot carry an empty file; there is nothing to fetch.
        _publish_empty(output, expected)
        return FetchSummary(options.url, str(output), 0, round(time.monotonic() - started, 3), 0, 0, task.info_hash)

    progress = _download(options, metainfo, output, expected, remaining, on_progress)
    return FetchSummary(
        url=options.url,
        output=str(output),
        size=size,
        seconds=round(time.monotonic() - started, 3),
        bytes_from_seeder=progress.bytes_from_seeder,
        bytes_from_peers=progress.bytes_from_peers,
        info_hash=task.info_hash,
    )


def _publish_empty(output: Path, expected: str | None) -> None:
    if expected and expected != hashlib.sha256(b"").hexdigest():
        raise IntegrityFailed(f"digest mismatch: expected sha256:{expected}, the origin sent 0 bytes")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    os.close(descriptor)
    os.replace(temporary, output)


def _download(
    options: FetchOptions,
    metainfo: bytes,
    output: Path,
    expected: str | None,
    timeout: float,
    on_progress: ProgressCallback | None,
) -> TaskProgress:
    # The download lands in a hidden folder beside the output, on the same file
    # system, so publishing it is a rename (or a hard link while seeding).
    work_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    host = options.host_config
    session = Session(SwarmSettings(listen_interfaces=options.listen_interfaces, **host.session_limits()))
    try:
        upload_limit, download_limit = host.task_limits(options.upload_limit, options.download_limit)
        task = session.add_task(metainfo, work_dir, upload_limit=upload_limit, download_limit=download_limit)
        deadline = time.monotonic() + timeout
        while not task.is_complete:
            if task.error:
                raise FetchError(f"download of {options.url} failed: {task.error}")
            if time.monotonic() > deadline:
                progress = task.progress()
                raise FetchTimedOut(
                    f"download of {options.url} timed out after {options.timeout:.0f} s "
                    f"with {progress.bytes_done} of {progress.size} bytes"
                )
            if on_progress:
                on_progress(task.progress())
            try:
                task.wait_complete(timeout=0.5)
            except TimeoutError:
                pass
            except SwarmError as error:
                raise FetchError(f"download of {options.url} failed: {error}") from None

        progress = task.progress()
        if on_progress:
            on_progress(progress)

        actual = _sha256_of(task.path)
        if expected and actual != expected:
            raise IntegrityFailed(f"digest mismatch: expected sha256:{expected}, got sha256:{actual}")

        _publish(task.path, output)
        log.info("fetch complete", extra={"url": options.url, "output": str(output), "info_hash": task.info_hash})

        if options.seed_time > 0:
            # The data stays in the work folder, hard-linked to the output, so
            # the session keeps seeding the same bytes it verified.
            time.sleep(options.seed_time)
            progress = task.progress()
        return progress
    finally:
        session.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def _publish(source: Path, output: Path) -> None:
    """Put `source` at `output` atomically, keeping `source` for seeding."""
    staged = output.parent / f".{output.name}.{os.getpid()}.ready"
    try:
        os.link(source, staged)
    except OSError:
        shutil.copyfile(source, staged)
    os.replace(staged, output)
