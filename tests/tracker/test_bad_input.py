"""Random and malformed query strings: every reply is status 200 and valid bencode."""

from __future__ import annotations

from urllib.parse import quote_from_bytes, unquote_to_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tracker.conftest import Tracker, bdecode, make_metainfo
from tracker.query import percent_decode

NAMES = ["info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "compact",
         "no_peer_id", "numwant", "ip", "ipv6", "key", "location", "x"]  # fmt: skip

# Bytes that may appear in a request target as they are (RFC 3986 unreserved,
# sub-delimiters, ':' '@' '/' '?') plus '%', so that broken escapes occur too.
QUERY_CHARACTERS = st.characters(
    codec="ascii",
    categories=("Lu", "Ll", "Nd"),
    include_characters="-._~!$&'()*+,;=:@/?%",
)

raw_queries = st.text(QUERY_CHARACTERS, max_size=300)

structured_queries = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.one_of(
            st.binary(max_size=30).map(quote_from_bytes),
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.sampled_from(["", "started", "completed", "stopped", "0", "1", "%", "%zz", "%4"]),
        ),
    ),
    max_size=20,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))


def check_reply(client: httpx.Client, url: str) -> None:
    response = client.get(httpx.URL(url))
    assert response.status_code == 200, f"{url} returned HTTP {response.status_code}"
    reply = bdecode(response.content)
    assert isinstance(reply, dict)
    if b"failure reason" in reply:
        assert reply[b"failure reason"], f"empty failure reason for {url}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(raw_queries, structured_queries))
def test_announce_random_queries(tracker: Tracker, query: str) -> None:
    with httpx.Client(timeout=10) as client:
        check_reply(client, f"{tracker.url}/announce?{query}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(raw_queries, structured_queries))
def test_scrape_random_queries(tracker: Tracker, query: str) -> None:
    with httpx.Client(timeout=10) as client:
        check_reply(client, f"{tracker.url}/scrape?{query}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    peer=st.binary(min_size=20, max_size=20),
    port=st.integers(min_value=1, max_value=65535),
    left=st.integers(min_value=0, max_value=2**63 - 1),
    extra=st.dictionaries(st.sampled_from(["location", "rack", "numwant", "event"]), st.text(max_size=20), max_size=3),
)
def test_announce_valid_fields_registered(tracker: Tracker, registered: bytes, peer: bytes, port: int, left: int,
                                          extra: dict[str, str]) -> None:
    query = "&".join(
        [f"info_hash={quote_from_bytes(registered)}", f"peer_id={quote_from_bytes(peer)}", f"port={port}",
         f"left={left}"]
        + [f"{name}={quote_from_bytes(value.encode())}" for name, value in extra.items()]
    )
    with httpx.Client(timeout=10) as client:
        check_reply(client, f"{tracker.url}/announce?{query}")


def test_bad_method_and_path(tracker: Tracker) -> None:
    posted = httpx.post(f"{tracker.url}/announce?info_hash=x", timeout=10)
    missing = httpx.get(f"{tracker.url}/nowhere", timeout=10)

    assert posted.status_code == 200
    assert bdecode(posted.content) == {b"failure reason": b"invalid info_hash: expected 20 bytes, got 1"}
    assert missing.status_code == 404


@given(st.binary(max_size=60))
def test_percent_decode_matches_unquote(value: bytes) -> None:
    encoded = quote_from_bytes(value).encode()
    assert percent_decode(encoded) == value


@given(st.binary(max_size=60).map(lambda data: data.replace(b"&", b"")))
def test_percent_decode_malformed_like_unquote(value: bytes) -> None:
    assert percent_decode(value) == unquote_to_bytes(value)


@pytest.fixture(scope="module")
def registered(tracker: Tracker) -> bytes:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    return info_hash
