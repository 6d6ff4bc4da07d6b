"""Checking a torrent file (BEP 3 metainfo) and computing its v1 info hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import bencode
from bencode import BencodeDecodeError

from core.ids import InfoHash, InvalidValue

_DECODER = bencode.Bencode(encoding=None, dict_ordered=True)


@dataclass(frozen=True)
class Metainfo:
    """The facts of a torrent file that the tracker keeps."""

    info_hash: InfoHash
    name: str
    size: int
    piece_length: int
    private: bool


def parse_metainfo(data: bytes) -> Metainfo:
    """Check that `data` is a v1 torrent file and return its facts; raise InvalidValue if not.

    The info hash is the SHA-1 of the info dictionary's bytes exactly as they
    appear in the file, which is what every client computes.
    """
    try:
        torrent = _DECODER.decode(data)
    except (BencodeDecodeError, ValueError, TypeError, IndexError, KeyError, RecursionError):
        raise InvalidValue("invalid metainfo: the body is not valid bencode") from None
    if not isinstance(torrent, dict):
        raise InvalidValue("invalid metainfo: expected a bencoded dictionary at the top level")

    info = torrent.get(b"info")
    if not isinstance(info, dict):
        raise InvalidValue("invalid metainfo: missing the info dictionary")

    name = info.get(b"name")
    if not isinstance(name, bytes) or not name:
        raise InvalidValue("invalid metainfo: info.name is missing or empty")

    piece_length = info.get(b"piece length")
    if not isinstance(piece_length, int) or piece_length <= 0:
        raise InvalidValue(f"invalid metainfo: info.piece length {piece_length!r} is not a positive integer")

    size = _content_size(info)
    pieces = info.get(b"pieces")
    # An empty file has no pieces; every other file has at least one.
    if not isinstance(pieces, bytes) or (not pieces and size > 0) or len(pieces) % 20:
        raise InvalidValue("invalid metainfo: info.pieces must be a non-empty multiple of 20 bytes")

    piece_count = len(pieces) // 20
    if piece_count != -(-size // piece_length) and size > 0:
        raise InvalidValue(
            f"invalid metainfo: {piece_count} piece hashes do not match {size} bytes "
            f"in pieces of {piece_length} bytes"
        )

    # NOTE: only the v1 info hash is served. A hybrid v1+v2 torrent also makes
    # libtorrent announce its truncated v2 hash, which this tracker rejects.
    start, end = _info_span(data)
    return Metainfo(
        info_hash=InfoHash(hashlib.sha1(data[start:end]).digest()),
        name=name.decode("utf-8", "replace"),
        size=size,
        piece_length=piece_length,
        private=info.get(b"private") == 1,
    )


def _content_size(info: dict) -> int:
    if b"length" in info:
        length = info[b"length"]
        if not isinstance(length, int) or length < 0:
            raise InvalidValue(f"invalid metainfo: info.length {length!r} is not a non-negative integer")
        return length

    files = info.get(b"files")
    if not isinstance(files, list) or not files:
        raise InvalidValue("invalid metainfo: info needs either length or a non-empty files list")
    total = 0
    for entry in files:
        length = entry.get(b"length") if isinstance(entry, dict) else None
        if not isinstance(length, int) or length < 0:
            raise InvalidValue("invalid metainfo: every entry of info.files needs a non-negative length")
        total += length
    return total


def _info_span(data: bytes) -> tuple[int, int]:
    """Return where the value of the top-level `info` key starts and ends in `data`."""
    index = 1  # past the `d` of the top-level dictionary
    while data[index : index + 1] != b"e":
        key_end = _value_end(data, index)
        key = data[data.index(b":", index) + 1 : key_end]
        value_end = _value_end(data, key_end)
        if key == b"info":
            return key_end, value_end
        index = value_end
    raise InvalidValue("invalid metainfo: missing the info dictionary")


def _value_end(data: bytes, index: int) -> int:
    # The data already decoded, so it is well formed and this scan needs no checks.
    kind = data[index : index + 1]
    if kind == b"i":
        return data.index(b"e", index) + 1
    if kind in (b"l", b"d"):
        index += 1
        while data[index : index + 1] != b"e":
            index = _value_end(data, index)
        return index + 1
    colon = data.index(b":", index)
    return colon + 1 + int(data[index:colon])
