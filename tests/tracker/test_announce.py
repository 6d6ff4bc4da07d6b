"""Announce conformance against a real tracker process: BEP 3, BEP 23 and BEP 7 fields."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.tracker.conftest import (
    Tracker,
    bdecode,
    get_raw,
    make_metainfo,
    peer_id,
    start_tracker,
    write_config,
)


def compact_ports(peers: bytes) -> list[int]:
    assert len(peers) % 6 == 0, f"compact IPv4 peers must be a multiple of 6 bytes, got {len(peers)}"
    return [struct.unpack("!H", peers[i + 4 : i + 6])[0] for i in range(0, len(peers), 6)]


def test_compact_reply_fields(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)

    tracker.announce(info_hash, peer_id(1), port=7001, left=0, event="started")
    reply = tracker.announce(info_hash, peer_id(2), port=7002, left=500, event="started")

    assert reply[b"interval"] == 60
    assert reply[b"min interval"] == 5
    assert reply[b"complete"] == 1
    assert reply[b"incomplete"] == 1
    assert reply[b"peers"] == socket.inet_aton("127.0.0.1") + struct.pack("!H", 7001)
    assert b"peers6" not in reply


def test_dictionary_reply_with_peer_ids(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    tracker.announce(info_hash, peer_id(1), port=7001, left=0)

    reply = tracker.announce(info_hash, peer_id(2), port=7002, compact=0)

    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"peer id": peer_id(1), b"port": 7001}]


def test_dictionary_reply_without_peer_ids(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    tracker.announce(info_hash, peer_id(1), port=7001, left=0)

    reply = tracker.announce(info_hash, peer_id(2), port=7002, compact=0, no_peer_id=1)

    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 7001}]


def test_peer_never_in_own_list(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    for number in range(5):
        tracker.announce(info_hash, peer_id(number), port=7000 + number, left=100)

    for number in range(5):
        reply = tracker.announce(info_hash, peer_id(number), port=7000 + number, left=100)
        ports = compact_ports(reply[b"peers"])
        assert 7000 + number not in ports
        assert len(ports) == 4


def test_numwant_default_cap_and_zero(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    for number in range(120):
        tracker.announce(info_hash, peer_id(number), port=10000 + number, left=100)
    newcomer = peer_id(999)

    default = tracker.announce(info_hash, newcomer, port=9999, left=100)
    capped = tracker.announce(info_hash, newcomer, port=9999, left=100, numwant=500)
    some = tracker.announce(info_hash, newcomer, port=9999, left=100, numwant=7)
    none = tracker.announce(info_hash, newcomer, port=9999, left=100, numwant=0)

    assert len(compact_ports(default[b"peers"])) == 50
    assert len(compact_ports(capped[b"peers"])) == 100
    assert len(compact_ports(some[b"peers"])) == 7
    assert none[b"peers"] == b""
    assert len(set(compact_ports(capped[b"peers"]))) == 100


def test_event_transitions(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    watcher = peer_id(50)

    started = tracker.announce(info_hash, peer_id(1), port=7001, left=1000, event="started")
    assert (started[b"complete"], started[b"incomplete"]) == (0, 1)

    tracker.announce(info_hash, peer_id(1), port=7001, left=400)
    assert tracker.scrape(info_hash)[b"files"][info_hash] == {b"complete": 0, b"downloaded": 0, b"incomplete": 1}

    completed = tracker.announce(info_hash, peer_id(1), port=7001, left=0, event="completed")
    assert (completed[b"complete"], completed[b"incomplete"]) == (1, 0)
    assert tracker.scrape(info_hash)[b"files"][info_hash][b"downloaded"] == 1

    # A repeated completion of the same peer is not counted twice.
    tracker.announce(info_hash, peer_id(1), port=7001, left=0, event="completed")
    assert tracker.scrape(info_hash)[b"files"][info_hash][b"downloaded"] == 1

    seen = tracker.announce(info_hash, watcher, port=7050, left=1000, numwant=10)
    assert compact_ports(seen[b"peers"]) == [7001]

    stopped = tracker.announce(info_hash, peer_id(1), port=7001, left=0, event="stopped")
    assert stopped[b"peers"] == b""
    assert stopped[b"complete"] == 0

    after = tracker.announce(info_hash, watcher, port=7050, left=1000)
    assert after[b"peers"] == b""
    assert (after[b"complete"], after[b"incomplete"]) == (0, 1)
    assert tracker.scrape(info_hash)[b"files"][info_hash][b"downloaded"] == 1


def test_stopped_unknown_peer_is_harmless(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)

    reply = tracker.announce(info_hash, peer_id(1), port=7001, left=10, event="stopped")

    assert reply[b"peers"] == b""
    assert (reply[b"complete"], reply[b"incomplete"]) == (0, 0)


def test_peer_moves_to_new_port(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    tracker.announce(info_hash, peer_id(1), port=7001, left=10)
    tracker.announce(info_hash, peer_id(1), port=7101, left=10)

    reply = tracker.announce(info_hash, peer_id(2), port=7002, left=10)

    assert compact_ports(reply[b"peers"]) == [7101]
    assert reply[b"incomplete"] == 2


def test_unregistered_info_hash_rejected(tracker: Tracker) -> None:
    unknown = bytes(range(20))

    reply = tracker.announce(unknown, peer_id(1))

    assert reply[b"failure reason"] == f"unregistered info_hash {unknown.hex()}: this tracker serves only torrents created through its task API".encode()


def test_non_utf8_info_hash_round_trips(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    while info_hash.isascii():
        metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)

    tracker.announce(info_hash, peer_id(1), port=7001, left=0)

    assert tracker.scrape(info_hash)[b"files"][info_hash][b"complete"] == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "missing info_hash: announce requires info_hash, peer_id, port and left"),
        ("info_hash=%01%02", "invalid info_hash: expected 20 bytes, got 2"),
        ("info_hash=" + "%41" * 19, "invalid info_hash: expected 20 bytes, got 19"),
        ("info_hash=" + "%41" * 20 + "&info_hash=" + "%41" * 20, "invalid info_hash: expected one value, got several"),
        ("info_hash=" + "%41" * 20 + "&port=1&left=0", "missing peer_id: announce requires info_hash, peer_id, port and left"),
        ("info_hash=" + "%41" * 20 + "&peer_id=abc&port=1&left=0", "invalid peer_id: expected 20 bytes, got 3"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=x&left=0", "invalid port 'x': expected a non-negative integer"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=70000&left=0", "invalid port 70000: at most 65535 allowed"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=0&left=0", "invalid port 0: expected a port from 1 to 65535"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1", "missing left: announce requires info_hash, peer_id, port and left"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1&left=-5", "invalid left '-5': expected a non-negative integer"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1&left=0&event=paused2", "invalid event 'paused2': expected started, completed, stopped or none"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1&left=0&compact=yes", "invalid compact 'yes': expected 0 or 1"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1&left=0&numwant=many", "invalid numwant 'many': expected a non-negative integer"),
        ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 + "&port=1&left=0&location=%ff", "invalid label 'location'='\\\\xff': expected UTF-8 text"),
    ],
)
def test_malformed_announce_named(tracker: Tracker, query: str, message: str) -> None:
    reply = bdecode(get_raw(f"{tracker.url}/announce?{query}"))

    assert reply == {b"failure reason": message.encode()}


def test_labels_stored_with_peer(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)

    tracker.announce(info_hash, peer_id(1), port=7001, location="dc1/rack7", pool="batch")

    swarm = tracker.api("GET", f"/swarms/{info_hash.hex()}").json()
    assert swarm["peers"][0]["labels"] == {"location": "dc1/rack7", "pool": "batch"}
    assert swarm["peers"][0]["peer_id"] == peer_id(1).hex()


def test_ipv6_peers_in_peers6(tmp_path) -> None:  # noqa: ANN001
    port = _free_ipv6_port()
    with start_tracker(tmp_path, listen=f"[::1]:{port}") as tracker:
        metainfo, info_hash = make_metainfo()
        tracker.register(metainfo)
        tracker.announce(info_hash, peer_id(1), port=7001, left=0)

        compact = tracker.announce(info_hash, peer_id(2), port=7002)
        dictionary = tracker.announce(info_hash, peer_id(2), port=7002, compact=0)

    assert compact[b"peers"] == b""
    assert compact[b"peers6"] == socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!H", 7001)
    assert dictionary[b"peers"] == [{b"ip": b"::1", b"peer id": peer_id(1), b"port": 7001}]


def test_mixed_families_with_announced_ip(tmp_path) -> None:  # noqa: ANN001
    with start_tracker(tmp_path, env={"P2P_TRACKER_TRUST_ANNOUNCED_IP": "true"}) as tracker:
        metainfo, info_hash = make_metainfo()
        tracker.register(metainfo)
        tracker.announce(info_hash, peer_id(1), port=7001, left=0, ipv6="fd00::1")
        tracker.announce(info_hash, peer_id(2), port=7002, left=0, ip="10.1.2.3")

        reply = tracker.announce(info_hash, peer_id(3), port=7003)
        bad = tracker.announce(info_hash, peer_id(3), port=7003, ip="not-an-address")

    assert reply[b"peers"] == socket.inet_aton("10.1.2.3") + struct.pack("!H", 7002)
    assert reply[b"peers6"] == socket.inet_pton(socket.AF_INET6, "fd00::1") + struct.pack("!H", 7001)
    assert bad[b"failure reason"] == b"invalid ip 'not-an-address': expected an IPv4 or IPv6 address"


def test_announced_ip_ignored_by_default(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo()
    tracker.register(metainfo)
    tracker.announce(info_hash, peer_id(1), port=7001, left=0, ip="10.9.9.9")

    reply = tracker.announce(info_hash, peer_id(2), port=7002)

    assert reply[b"peers"] == socket.inet_aton("127.0.0.1") + struct.pack("!H", 7001)


def test_silent_peer_expires(tmp_path) -> None:  # noqa: ANN001
    config = write_config(tmp_path / "fast.toml", announce_interval=1, min_announce_interval=1)
    with start_tracker(tmp_path, "--config", str(config)) as tracker:
        metainfo, info_hash = make_metainfo()
        tracker.register(metainfo)
        tracker.announce(info_hash, peer_id(1), port=7001, left=0)
        tracker.announce(info_hash, peer_id(2), port=7002, left=10)

        # Peer 2 keeps announcing; peer 1 falls silent and must be gone
        # after two intervals plus one sweep period (2.5 s).
        deadline = time.monotonic() + 8
        counts = None
        while time.monotonic() < deadline:
            reply = tracker.announce(info_hash, peer_id(2), port=7002, left=10)
            counts = (reply[b"complete"], reply[b"incomplete"])
            if counts == (0, 1):
                break
            time.sleep(0.25)
        elapsed = 8 - (deadline - time.monotonic())

    assert counts == (0, 1)
    assert reply[b"peers"] == b""
    assert elapsed >= 1.5, f"peer expired after {elapsed:.1f} s, before two intervals"


def _free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]
