"""The piece length rule and the metainfo the seeder builds, read back by libtorrent."""

from __future__ import annotations

import hashlib

import bencodepy
import libtorrent as lt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.ids import InvalidValue
from seeder.metainfo import build_metainfo, read_metainfo, with_announce
from seeder.pieces import (
    KIB,
    MAX_PIECE_LENGTH,
    MIB,
    MIN_PIECE_LENGTH,
    check_requested_piece_length,
    choose_piece_length,
    piece_count,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 256 * KIB),
        (1, 256 * KIB),
        (500 * MIB, 256 * KIB),
        (500 * MIB + 1, 512 * KIB),
        (1024 * MIB, 1 * MIB),
        (2000 * 16 * MIB, 16 * MIB),
        (10**13, 16 * MIB),
    ],
)
def test_piece_length_table(size, expected):
    assert choose_piece_length(size) == expected


@given(st.integers(MIN_PIECE_LENGTH * 2000 + 1, MAX_PIECE_LENGTH * 2000))
def test_piece_count_between_1000_and_2000(size):
    length = choose_piece_length(size)

    assert length & (length - 1) == 0
    assert 1000 < piece_count(size, length) <= 2000


@pytest.mark.parametrize("length", [16 * KIB, 256 * KIB, 64 * MIB])
def test_requested_piece_length_valid(length):
    assert check_requested_piece_length(length) == length


@pytest.mark.parametrize("length", [0, 1, 8 * KIB, 300 * KIB, 128 * MIB])
def test_requested_piece_length_invalid(length):
    with pytest.raises(InvalidValue, match=f"invalid piece_length {length}"):
        check_requested_piece_length(length)


def test_metainfo_read_by_libtorrent():
    data = bytes(range(256)) * 3000
    piece_length = 256 * KIB
    pieces = b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))
    name = hashlib.sha256(data).hexdigest()

    metainfo = build_metainfo(
        name=name, size=len(data), piece_length=piece_length, piece_hashes=pieces,
        announce_url="http://127.0.0.1:6969/announce",
    )
    info = lt.torrent_info(lt.bdecode(metainfo.data))

    assert info.name() == name
    assert info.total_size() == len(data)
    assert info.piece_length() == piece_length
    assert info.priv()
    assert bencodepy.decode(metainfo.data)[b"announce"] == b"http://127.0.0.1:6969/announce"
    assert str(info.info_hashes().v1) == metainfo.info_hash
    assert read_metainfo(metainfo.data) == metainfo


def test_metainfo_is_deterministic():
    fields = dict(name="a" * 64, size=1, piece_length=256 * KIB, piece_hashes=b"\x01" * 20, announce_url="http://t/announce")

    assert build_metainfo(**fields).data == build_metainfo(**fields).data


def test_metainfo_of_empty_file():
    metainfo = build_metainfo(name="e" * 64, size=0, piece_length=256 * KIB, piece_hashes=b"", announce_url="http://t/a")

    torrent = bencodepy.decode(metainfo.data)
    assert torrent[b"info"][b"length"] == 0
    assert torrent[b"info"][b"pieces"] == b""


def test_metainfo_rejects_wrong_piece_count():
    with pytest.raises(ValueError, match="expected 2"):
        build_metainfo(name="x", size=300 * KIB, piece_length=256 * KIB, piece_hashes=b"\x00" * 20, announce_url="http://t/a")


def test_with_announce_keeps_the_info_hash():
    metainfo = build_metainfo(name="x", size=1, piece_length=256 * KIB, piece_hashes=b"\x02" * 20, announce_url="http://a/announce")

    moved = with_announce(metainfo, "http://b/announce")

    assert moved.info_hash == metainfo.info_hash
    assert bencodepy.decode(moved.data)[b"announce"] == b"http://b/announce"
    assert read_metainfo(moved.data).info_hash == metainfo.info_hash


@pytest.mark.parametrize("data", [b"", b"garbage", b"d4:infoi1ee", bencodepy.encode({b"info": {b"name": b"x"}})])
def test_read_metainfo_rejects_other_data(data):
    with pytest.raises(ValueError, match="not a single-file torrent"):
        read_metainfo(data)
