"""The error of a failed ingest, with a message meant for the person who asked for the task."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit


class FailureCause(StrEnum):
    """The fixed set of reasons an ingest fails, used as a metric label."""

    INVALID_REQUEST = "invalid_request"
    ORIGIN_STATUS = "origin_status"
    ORIGIN_UNREACHABLE = "origin_unreachable"
    ORIGIN_PROTOCOL = "origin_protocol"
    DIGEST_MISMATCH = "digest_mismatch"
    TOO_LARGE = "too_large"
    DISK = "disk"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class IngestError(Exception):
    """An ingest failed; the message is sent to the tracker as the task's error, as is."""

    def __init__(self, message: str, cause: FailureCause) -> None:
        super().__init__(message)
        self.cause = cause


def redact_url(url: str) -> str:
    """Return `url` without its query string, which often carries a signature."""
    parts = urlsplit(url)
    query = "..." if parts.query else ""
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
