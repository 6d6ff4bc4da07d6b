"""Canonical URLs and task ids."""

from __future__ import annotations

import pytest

from core.ids import Digest, InvalidValue
from tracker.settings import DEFAULT_VOLATILE_QUERY_PARAMETERS
from tracker.task_ids import canonical_url, is_task_id, task_id

VOLATILE = DEFAULT_VOLATILE_QUERY_PARAMETERS


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Example.COM:80/a/B?z=1&a=2", "http://example.com/a/B?a=2&z=1"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://user:secret@example.com/x", "https://example.com/x"),
        ("http://[FD00::1]:8080/x#frag", "http://[fd00::1]:8080/x"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/x?x-amz-signature=1&X-AMZ-DATE=2&keep=3", "http://example.com/x?keep=3"),
        ("http://example.com/x?sig%6eature=1&keep", "http://example.com/x?keep"),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert canonical_url(url, VOLATILE) == canonical


def test_custom_volatile_parameters() -> None:
    assert canonical_url("http://example.com/x?token=1&t2=2&v=3", ["token", "t*"]) == "http://example.com/x?v=3"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "example.com/x", "http://example.com:99999/x"])
def test_invalid_urls_rejected(url: str) -> None:
    with pytest.raises(InvalidValue, match="invalid url"):
        canonical_url(url, VOLATILE)


def test_digest_wins_over_url() -> None:
    digest = Digest.parse("sha256:" + "0f" * 32)

    assert task_id("http://a.example/x", digest, VOLATILE) == str(digest)
    assert task_id("http://b.example/y", digest, VOLATILE) == str(digest)


def test_url_id_shape() -> None:
    identifier = task_id("http://example.com/x?Expires=5", None, VOLATILE)

    assert identifier == task_id("http://example.com/x", None, VOLATILE)
    assert is_task_id(identifier)
    assert not is_task_id("url:xyz")
    assert not is_task_id("md5:" + "0" * 64)
