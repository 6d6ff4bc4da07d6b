"""Task ids: one id per content, whatever URL variant or credentials a host sends."""

from __future__ import annotations

import hashlib
from urllib.parse import unquote, urlsplit, urlunsplit

from core.ids import Digest, InvalidValue

DEFAULT_PORTS = {"http": 80, "https": 443}


def task_id(url: str, digest: Digest | None, volatile_parameters: list[str]) -> str:
    """Return the task id: the digest when known, else `url:` and the SHA-256 of the canonical URL.

    Headers never take part: two hosts with different credentials for one
    object share its task.
    """
    if digest is not None:
        return str(digest)
    canonical = canonical_url(url, volatile_parameters)
    return "url:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def canonical_url(url: str, volatile_parameters: list[str]) -> str:
    """Return `url` without volatile query parameters, fragment or default port, with sorted query.

    The scheme and host are lowercased; the path is kept as sent, because
    origins may treat its case and encoding as significant.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise InvalidValue(f"invalid url {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidValue(f"invalid url {url!r}: expected an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidValue(f"invalid url {url!r}: the URL has no host")

    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"

    # User info (user:password@) is left out: it is a credential, like a header.
    kept = [pair for pair in parts.query.split("&") if pair and not _is_volatile(pair, volatile_parameters)]
    query = "&".join(sorted(kept))
    return urlunsplit((scheme, host, parts.path or "/", query, ""))


def is_task_id(text: str) -> bool:
    """Tell whether `text` has the form of a task id (`sha256:<hex>` or `url:<hex>`)."""
    kind, _, value = text.partition(":")
    return kind in ("sha256", "url") and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_volatile(pair: str, patterns: list[str]) -> bool:
    name = unquote(pair.partition("=")[0]).lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif name == pattern:
            return True
    return False
