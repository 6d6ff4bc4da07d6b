"""Peer selection: seeders first for newcomers, then shared location, then chance."""

from __future__ import annotations

import random
import struct

from core.ids import InfoHash
from tests.tracker.conftest import Tracker, make_metainfo, peer_id
from tracker.selection import select_peers, shared_prefix_length
from tracker.swarms import Peer, Swarm

SIZE = 1000


def add_peer(swarm: Swarm, number: int, left: int, location: str = "") -> Peer:
    peer = Peer(peer_id(number), "127.0.0.1", 7000 + number, b"\x7f\x00\x00\x01" + struct.pack("!H", 7000 + number), False)
    peer.left = left
    peer.location = tuple(part for part in location.split("/") if part)
    swarm.add(peer)
    return peer


def numbers(peers: list[Peer]) -> list[int]:
    return [peer.port - 7000 for peer in peers]


def test_shared_prefix_counts_components() -> None:
    assert shared_prefix_length(("dc1", "rack7"), ("dc1", "rack7")) == 2
    assert shared_prefix_length(("dc1", "rack7"), ("dc1", "rack8")) == 1
    assert shared_prefix_length(("dc1",), ("dc10",)) == 0
    assert shared_prefix_length((), ("dc1",)) == 0


def test_newcomer_gets_seeders_first() -> None:
    swarm = Swarm(InfoHash(b"\x01" * 20), SIZE)
    for number in range(10):
        add_peer(swarm, number, left=SIZE // 2)
    for number in range(10, 13):
        add_peer(swarm, number, left=0)
    newcomer = add_peer(swarm, 99, left=SIZE)

    for seed in range(20):
        chosen = numbers(select_peers(swarm, newcomer, 5, random.Random(seed)))
        assert sorted(chosen[:3]) == [10, 11, 12]
        assert len(chosen) == 5
        assert 99 not in chosen


def test_seeders_first_beats_location() -> None:
    swarm = Swarm(InfoHash(b"\x01" * 20), SIZE)
    add_peer(swarm, 1, left=SIZE // 2, location="dc1/rack7")
    add_peer(swarm, 2, left=0, location="dc2/rack1")
    newcomer = add_peer(swarm, 99, left=SIZE, location="dc1/rack7")

    chosen = numbers(select_peers(swarm, newcomer, 5, random.Random(1)))

    assert chosen == [2, 1]


def test_location_prefix_orders_peers() -> None:
    swarm = Swarm(InfoHash(b"\x01" * 20), SIZE)
    add_peer(swarm, 1, left=100, location="dc2/rack1")
    add_peer(swarm, 2, left=100, location="dc1/rack8")
    add_peer(swarm, 3, left=100, location="dc1/rack7")
    add_peer(swarm, 4, left=0, location="dc1/rack7")
    add_peer(swarm, 5, left=100)
    # Half the content: not a newcomer, so seeders and leechers mix by location.
    requester = add_peer(swarm, 99, left=SIZE // 2, location="dc1/rack7")

    chosen = numbers(select_peers(swarm, requester, 10, random.Random(3)))

    assert sorted(chosen[:2]) == [3, 4]
    assert chosen[2] == 2
    assert sorted(chosen[3:]) == [1, 5]


def test_ties_come_in_random_order() -> None:
    swarm = Swarm(InfoHash(b"\x01" * 20), SIZE)
    for number in range(30):
        add_peer(swarm, number, left=100, location="dc1/rack1")
    requester = add_peer(swarm, 99, left=100, location="dc1/rack1")

    orders = {tuple(numbers(select_peers(swarm, requester, 10, random.Random(seed)))) for seed in range(10)}

    assert len(orders) > 5


def test_seeder_gets_only_leechers() -> None:
    swarm = Swarm(InfoHash(b"\x01" * 20), SIZE)
    add_peer(swarm, 1, left=0)
    add_peer(swarm, 2, left=0)
    add_peer(swarm, 3, left=10)
    seeder = add_peer(swarm, 99, left=0)

    chosen = numbers(select_peers(swarm, seeder, 50, random.Random(0)))

    assert chosen == [3]


def test_location_preference_over_http(tracker: Tracker) -> None:
    metainfo, info_hash = make_metainfo(size=SIZE * 1024)
    tracker.register(metainfo)
    for number in range(20):
        tracker.announce(info_hash, peer_id(number), port=7000 + number, left=100, location=f"dc{number % 4}/rack1")
    tracker.announce(info_hash, peer_id(50), port=7050, left=100, location="dc3/rack9")

    reply = tracker.announce(info_hash, peer_id(60), port=7060, left=100, location="dc3/rack9", numwant=6)
    peers = reply[b"peers"]
    ports = [struct.unpack("!H", peers[i + 4 : i + 6])[0] for i in range(0, len(peers), 6)]

    # The same rack first, then the five other dc3 peers (3, 7, 11, 15, 19).
    assert ports[0] == 7050
    assert sorted(ports[1:]) == [7003, 7007, 7011, 7015, 7019]
