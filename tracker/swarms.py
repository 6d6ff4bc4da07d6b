"""The peers of every registered torrent, kept in memory.

Peers are not persisted: after a restart every client re-announces within one
interval and the swarms fill up again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.ids import InfoHash

# A peer is filed under (is_seeder, location) so that peer selection can walk
# whole racks and datacenters without looking at every peer.
GroupKey = tuple[bool, tuple[str, ...]]


class Peer:
    """One client in one swarm, as it last announced."""

    __slots__ = (
        "peer_id",
        "ip",
        "port",
        "compact",
        "is_ipv6",
        "left",
        "uploaded",
        "downloaded",
        "labels",
        "location",
        "last_seen",
        "counted_complete",
    )

    def __init__(self, peer_id: bytes, ip: str, port: int, compact: bytes, is_ipv6: bool) -> None:
        self.peer_id = peer_id
        self.ip = ip
        self.port = port
        # Address and port as BEP 23 (IPv4, 6 bytes) or BEP 7 (IPv6, 18 bytes) pack them.
        self.compact = compact
        self.is_ipv6 = is_ipv6
        self.left = 0
        self.uploaded = 0
        self.downloaded = 0
        self.labels: dict[str, str] = {}
        self.location: tuple[str, ...] = ()
        self.last_seen = 0.0
        # Set once the peer's completion has been counted in `downloaded`.
        self.counted_complete = False

    @property
    def is_seeder(self) -> bool:
        return self.left == 0

    @property
    def group_key(self) -> GroupKey:
        return (self.left == 0, self.location)


@dataclass
class Swarm:
    """The peers of one torrent, with the counts that announce and scrape return."""

    info_hash: InfoHash
    size: int
    peers: dict[bytes, Peer] = field(default_factory=dict)
    groups: dict[GroupKey, dict[bytes, Peer]] = field(default_factory=dict)
    complete: int = 0
    incomplete: int = 0
    downloaded: int = 0

    def add(self, peer: Peer) -> None:
        self.peers[peer.peer_id] = peer
        self._file(peer)

    def remove(self, peer_id: bytes) -> Peer | None:
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            self._unfile(peer)
        return peer

    def refile(self, peer: Peer, left: int, location: tuple[str, ...]) -> None:
        """Change the seeder state or location of a peer, keeping the counts right."""
        if (left == 0) == peer.is_seeder and location == peer.location:
            peer.left = left
            return
        self._unfile(peer)
        peer.left = left
        peer.location = location
        self._file(peer)

    def expire(self, deadline: float) -> int:
        """Drop the peers last seen before `deadline` (a time.monotonic value)."""
        stale = [peer_id for peer_id, peer in self.peers.items() if peer.last_seen < deadline]
        for peer_id in stale:
            self.remove(peer_id)
        return len(stale)

    def _file(self, peer: Peer) -> None:
        self.groups.setdefault(peer.group_key, {})[peer.peer_id] = peer
        if peer.is_seeder:
            self.complete += 1
        else:
            self.incomplete += 1

    def _unfile(self, peer: Peer) -> None:
        key = peer.group_key
        group = self.groups[key]
        del group[peer.peer_id]
        if not group:
            del self.groups[key]
        if peer.is_seeder:
            self.complete -= 1
        else:
            self.incomplete -= 1


class SwarmRegistry:
    """The swarms of the info hashes the tracker serves; other info hashes are rejected."""

    def __init__(self) -> None:
        self.swarms: dict[bytes, Swarm] = {}

    def register(self, info_hash: InfoHash, size: int) -> Swarm:
        swarm = self.swarms.get(info_hash.raw)
        if swarm is None:
            swarm = Swarm(info_hash, size)
            self.swarms[info_hash.raw] = swarm
        return swarm

    def get(self, raw_info_hash: bytes) -> Swarm | None:
        return self.swarms.get(raw_info_hash)

    def expire(self, timeout: float) -> int:
        """Drop peers that have not announced for `timeout` seconds; return how many."""
        deadline = time.monotonic() - timeout
        return sum(swarm.expire(deadline) for swarm in self.swarms.values())

    def peer_counts(self) -> tuple[int, int]:
        """Return the number of seeders and of leechers over all swarms."""
        seeders = sum(swarm.complete for swarm in self.swarms.values())
        leechers = sum(swarm.incomplete for swarm in self.swarms.values())
        return seeders, leechers
