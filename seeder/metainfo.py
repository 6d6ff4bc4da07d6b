"""Building the metainfo (a BEP 3 v1 torrent) of one cached file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import bencodepy

CREATED_BY = "p2p-seeder"


@dataclass(frozen=True)
class Metainfo:
    """A bencoded torrent and the values a caller reads from it."""

    data: bytes
    info_hash: str  # hex SHA-1 of the bencoded info dictionary
    name: str
    size: int
    piece_length: int


def build_metainfo(
    *, name: str, size: int, piece_length: int, piece_hashes: bytes, announce_url: str
) -> Metainfo:
    """Build a private single-file v1 torrent.

    `piece_hashes` is the concatenated SHA-1 of every piece, in order. The
    output contains no creation date, so the same content and announce URL
    always give the same bytes.
    """
    if len(piece_hashes) % 20:
        raise ValueError(f"piece_hashes has {len(piece_hashes)} bytes, not a multiple of 20")
    expected = -(-size // piece_length)
    if len(piece_hashes) // 20 != expected:
        raise ValueError(
            f"{len(piece_hashes) // 20} piece hashes for {size} bytes in pieces of {piece_length}; expected {expected}"
        )

    info = {
        b"length": size,
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": piece_hashes,
        # Private (BEP 27): peers come from the tracker only, never from DHT or PEX.
        b"private": 1,
    }
    torrent = {b"announce": announce_url.encode(), b"created by": CREATED_BY.encode(), b"info": info}
    info_hash = hashlib.sha1(bencodepy.encode(info)).hexdigest()
    return Metainfo(bencodepy.encode(torrent), info_hash, name, size, piece_length)


def read_metainfo(data: bytes) -> Metainfo:
    """Parse a torrent that `build_metainfo` wrote; raise ValueError when it is not one."""
    try:
        torrent = bencodepy.decode(data)
        info = torrent[b"info"]
        name = info[b"name"].decode()
        size = info[b"length"]
        piece_length = info[b"piece length"]
    except (bencodepy.BencodeDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise ValueError(f"not a single-file torrent: {error!r}") from None
    info_hash = hashlib.sha1(bencodepy.encode(info)).hexdigest()
    return Metainfo(data, info_hash, name, size, piece_length)


def with_announce(metainfo: Metainfo, announce_url: str) -> Metainfo:
    """Return the same torrent announcing to `announce_url`; the info hash does not change."""
    torrent = bencodepy.decode(metainfo.data)
    torrent[b"announce"] = announce_url.encode()
    return Metainfo(
        bencodepy.encode(torrent), metainfo.info_hash, metainfo.name, metainfo.size, metainfo.piece_length
    )


def announce_url_of(metainfo: Metainfo) -> str:
    return bencodepy.decode(metainfo.data).get(b"announce", b"").decode()
