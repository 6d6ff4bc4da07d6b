"""Pieces of the OCI Distribution Specification that the mirror speaks: names, errors, ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import JSONResponse

API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"

# Repository names: path components of lowercase alphanumerics joined by
# separators, as the distribution specification defines them.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
REFERENCE_PATTERN = re.compile(r"^(?:[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$")

# Manifest and blob paths below /v2/; everything else is forwarded as is.
MANIFEST_PATH = re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
BLOB_PATH = re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Return an OCI error body, `{"errors": [{"code", "message"}]}`, with `status`."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return JSONResponse(body, status_code=status, headers={API_VERSION_HEADER: API_VERSION, **(headers or {})})


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of a blob; `end` is exclusive, unlike in the HTTP header."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class RangeNotSatisfiable(Exception):
    """A Range header none of whose bytes exist in the blob."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Parse a single-range `Range` header against a blob of `size` bytes.

    Returns None for "send the whole blob": no header, a unit other than
    bytes, several ranges or a malformed value (RFC 9110 lets a server ignore
    such a Range). Raises RangeNotSatisfiable when the range starts past the end.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None

    if not first:
        # A suffix range, `bytes=-N`: the last N bytes.
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size)

    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(end, size))
