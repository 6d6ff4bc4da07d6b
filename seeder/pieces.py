"""The piece length of a new torrent."""

from __future__ import annotations

from core.ids import InvalidValue

KIB = 1024
MIB = 1024 * KIB

# The automatic choice stays in this range: smaller pieces make the metainfo
# and the per-piece overhead grow, larger ones make the first piece slow to
# arrive and a hash failure costly.
MIN_PIECE_LENGTH = 256 * KIB
MAX_PIECE_LENGTH = 16 * MIB

# About this many pieces at most, so a file has between half of it and all of it.
TARGET_MAX_PIECES = 2000

# A task may ask for any power of two in this range (BitTorrent requests
# blocks of 16 KiB, so a piece is at least one block).
MIN_REQUESTED_PIECE_LENGTH = 16 * KIB
MAX_REQUESTED_PIECE_LENGTH = 64 * MIB

# Every length the automatic choice can return, smallest first.
CANDIDATE_PIECE_LENGTHS = tuple(
    1 << shift
    for shift in range(MIN_PIECE_LENGTH.bit_length() - 1, MAX_PIECE_LENGTH.bit_length())
)


def choose_piece_length(size: int) -> int:
    """Return the smallest power of two giving at most 2,000 pieces, within 256 KiB..16 MiB.

    Between the bounds a file then has more than 1,000 and at most 2,000 pieces.
    """
    for length in CANDIDATE_PIECE_LENGTHS:
        if size <= length * TARGET_MAX_PIECES:
            return length
    return MAX_PIECE_LENGTH


def check_requested_piece_length(length: int) -> int:
    """Return a task's own piece length, or raise InvalidValue saying what is allowed."""
    if (
        length < MIN_REQUESTED_PIECE_LENGTH
        or length > MAX_REQUESTED_PIECE_LENGTH
        or length & (length - 1)
    ):
        raise InvalidValue(
            f"invalid piece_length {length}: expected a power of two from "
            f"{MIN_REQUESTED_PIECE_LENGTH} (16 KiB) to {MAX_REQUESTED_PIECE_LENGTH} (64 MiB)"
        )
    return length


def piece_count(size: int, piece_length: int) -> int:
    return -(-size // piece_length)
