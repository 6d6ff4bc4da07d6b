"""Bencoded replies of the announce and scrape endpoints.

The compact announce reply is written by hand because it is the hot path of
the tracker. Its keys must stay in sorted order, as bencode requires.
"""

from __future__ import annotations

import bencode

from tracker.swarms import Peer, Swarm


def failure(message: str) -> bytes:
    """Encode a `failure reason` reply (BEP 3), which clients expect with status 200."""
    text = message.encode("utf-8", "backslashreplace")
    return b"d14:failure reason%d:%se" % (len(text), text)


def compact_announce(swarm: Swarm, interval: int, min_interval: int, peers: list[Peer]) -> bytes:
    """Encode an announce reply with BEP 23 `peers` and BEP 7 `peers6` strings."""
    ipv4 = b"".join([peer.compact for peer in peers if not peer.is_ipv6])
    ipv6 = b"".join([peer.compact for peer in peers if peer.is_ipv6])
    parts = [
        b"d8:completei%de10:downloadedi%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:"
        % (swarm.complete, swarm.downloaded, swarm.incomplete, interval, min_interval, len(ipv4)),
        ipv4,
    ]
    if ipv6:
        parts.append(b"6:peers6%d:" % len(ipv6))
        parts.append(ipv6)
    parts.append(b"e")
    return b"".join(parts)


def dictionary_announce(
    swarm: Swarm, interval: int, min_interval: int, peers: list[Peer], no_peer_id: bool
) -> bytes:
    """Encode an announce reply whose `peers` is a list of dictionaries (BEP 3, `compact=0`)."""
    entries = []
    for peer in peers:
        entry: dict[bytes, object] = {b"ip": peer.ip.encode("ascii"), b"port": peer.port}
        if not no_peer_id:
            entry[b"peer id"] = peer.peer_id
        entries.append(entry)
    return bencode.bencode(
        {
            b"complete": swarm.complete,
            b"downloaded": swarm.downloaded,
            b"incomplete": swarm.incomplete,
            b"interval": interval,
            b"min interval": min_interval,
            b"peers": entries,
        }
    )


def scrape(swarms: list[Swarm]) -> bytes:
    """Encode a scrape reply (BEP 48): `files` keyed by the raw info hash."""
    files = {
        swarm.info_hash.raw: {
            b"complete": swarm.complete,
            b"downloaded": swarm.downloaded,
            b"incomplete": swarm.incomplete,
        }
        for swarm in swarms
    }
    return bencode.bencode({b"files": files})
