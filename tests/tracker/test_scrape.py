"""Scrape conformance (BEP 48) against a real tracker process."""

from __future__ import annotations

from tests.tracker.conftest import Tracker, bdecode, get_raw, make_metainfo, peer_id


def test_scrape_several_info_hashes(tracker: Tracker) -> None:
    first_metainfo, first = make_metainfo()
    second_metainfo, second = make_metainfo()
    tracker.register(first_metainfo)
    tracker.register(second_metainfo)
    tracker.announce(first, peer_id(1), left=0)
    tracker.announce(first, peer_id(2), left=10)
    tracker.announce(first, peer_id(3), left=10)
    tracker.announce(second, peer_id(1), left=10, event="started")
    tracker.announce(second, peer_id(1), left=0, event="completed")

    files = tracker.scrape(first, second)[b"files"]

    assert files[first] == {b"complete": 1, b"downloaded": 0, b"incomplete": 2}
    assert files[second] == {b"complete": 1, b"downloaded": 1, b"incomplete": 0}
    assert len(files) == 2


def test_scrape_leaves_out_unregistered(tracker: Tracker) -> None:
    metainfo, known = make_metainfo()
    tracker.register(metainfo)
    unknown = b"\x00" * 20

    files = tracker.scrape(known, unknown)[b"files"]

    assert list(files) == [known]
    assert files[known] == {b"complete": 0, b"downloaded": 0, b"incomplete": 0}


def test_scrape_repeated_hash_once(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)

    files = tracker.scrape(info_hash, info_hash)[b"files"]

    assert list(files) == [info_hash]


def test_scrape_without_info_hash_rejected(tracker: Tracker) -> None:
    reply = bdecode(get_raw(f"{tracker.url}/scrape"))

    assert reply == {b"failure reason": b"missing info_hash: scrape requires at least one info_hash"}


def test_scrape_short_info_hash_rejected(tracker: Tracker) -> None:
    reply = bdecode(get_raw(f"{tracker.url}/scrape?info_hash=" + "%41" * 19))

    assert reply == {b"failure reason": b"invalid info_hash: expected 20 bytes, got 19"}


def test_scrape_too_many_info_hashes(tracker: Tracker) -> None:
    query = "&".join(["info_hash=" + "%41" * 20] * 101)

    reply = bdecode(get_raw(f"{tracker.url}/scrape?{query}"))

    assert reply == {b"failure reason": b"invalid query: 101 info_hash values, at most 100 allowed"}
