"""Parsing raw query strings, whose values may be arbitrary bytes.

Starlette decodes query parameters as UTF-8, which corrupts the raw 20-byte
`info_hash` and `peer_id` of an announce, so these endpoints read the raw
query string of the ASGI scope instead. Names stay bytes too: the announce
path compares them with byte constants and decodes only host labels.
"""

from __future__ import annotations

import codecs
from urllib.parse import unquote_to_bytes

from tracker.errors import Rejected

# More parameters than any client sends; the limit bounds the work of one request.
MAX_PARAMETERS = 64


def percent_decode(value: bytes) -> bytes:
    """Decode `%XX` escapes; a `+` stays a `+`, since BitTorrent clients do not form-encode.

    The fast path rewrites `%XX` as `\\xXX` and lets the C escape decoder do
    the work, which is several times faster than unquote_to_bytes on a fully
    escaped 20-byte hash. A malformed escape such as `%zz` makes the fast path
    fail, and then unquote_to_bytes keeps it as literal text.
    """
    try:
        return codecs.escape_decode(value.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote_to_bytes(value)


def split_query(raw: bytes) -> dict[bytes, bytes]:
    """Split a raw query string into names and still percent-encoded values.

    Names are compared as sent, because no client escapes the ASCII names of
    the protocol. A repeated name is rejected: announce takes one of each.
    Callers decode each value with `unescape` when they read it, so that
    unread values cost nothing.
    """
    if not raw:
        return {}
    pairs = raw.split(b"&")
    if len(pairs) > MAX_PARAMETERS:
        raise Rejected(f"invalid query: {len(pairs)} parameters, at most {MAX_PARAMETERS} allowed")

    params = dict([pair.partition(b"=")[::2] for pair in pairs])
    if len(params) != len(pairs) or b"" in params:
        # Rare: find the repeated name, and skip empty pairs such as a trailing `&`.
        params = {}
        for pair in pairs:
            if not pair:
                continue
            name, _, value = pair.partition(b"=")
            if name in params:
                shown = unescape(name)[:64].decode("utf-8", "backslashreplace")
                raise Rejected(f"invalid {shown}: expected one value, got several")
            params[name] = value
    return params


def unescape(value: bytes) -> bytes:
    """Decode the `%XX` escapes of a query value, if it has any."""
    return percent_decode(value) if b"%" in value else value


def parse_values(raw: bytes, wanted: bytes, limit: int) -> list[bytes]:
    """Return every decoded value of the parameter `wanted`, in order; at most `limit` of them."""
    pairs = raw.split(b"&") if raw else []
    if len(pairs) > limit + MAX_PARAMETERS:
        raise Rejected(f"invalid query: {len(pairs)} parameters, at most {limit + MAX_PARAMETERS} allowed")

    values = []
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        if b"%" in name:
            name = percent_decode(name)
        if name == wanted:
            values.append(percent_decode(value) if b"%" in value else value)

    if len(values) > limit:
        shown = wanted.decode("utf-8", "backslashreplace")
        raise Rejected(f"invalid query: {len(values)} {shown} values, at most {limit} allowed")
    return values


def integer(name: str, value: bytes, maximum: int) -> int:
    """Parse a decimal integer from 0 to `maximum`."""
    if not value.isdigit() or len(value) > 20:
        raise Rejected(f"invalid {name} {show(value)}: expected a non-negative integer")
    number = int(value)
    if number > maximum:
        raise Rejected(f"invalid {name} {number}: at most {maximum} allowed")
    return number


def show(value: bytes, limit: int = 40) -> str:
    """Render untrusted bytes for an error message: quoted, escaped and cut to `limit` bytes."""
    text = repr(value[:limit].decode("utf-8", "backslashreplace"))
    return text if len(value) <= limit else text + "..."
