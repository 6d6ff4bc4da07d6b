"""Self-validating identifiers: info hashes, peer ids and content digests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class InvalidValue(ValueError):
    """A value from outside (a request, a setting, the command line) that failed validation.

    The message names the value and what was expected, so it can be shown as is.
    """


@dataclass(frozen=True, slots=True)
class InfoHash:
    """The 20-byte SHA-1 of a v1 torrent's bencoded info dictionary (BEP 3)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 20:
            raise InvalidValue(f"invalid info_hash: expected 20 bytes, got {len(self.raw)}")

    @classmethod
    def from_hex(cls, text: str) -> InfoHash:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidValue(f"invalid info_hash {text!r}: expected 40 hexadecimal digits") from None
        if len(raw) != 20:
            raise InvalidValue(f"invalid info_hash {text!r}: expected 40 hexadecimal digits")
        return cls(raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex


@dataclass(frozen=True, slots=True)
class PeerId:
    """The 20-byte id a BitTorrent client picks for itself (BEP 3)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 20:
            raise InvalidValue(f"invalid peer_id: expected 20 bytes, got {len(self.raw)}")


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest in the OCI form `sha256:<64 lowercase hex digits>`."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, _, value = text.partition(":")
        if algorithm != "sha256":
            raise InvalidValue(f"invalid digest {text!r}: only sha256:<64 hex digits> is supported")
        if not _SHA256_HEX.match(value):
            raise InvalidValue(f"invalid digest {text!r}: expected sha256: and 64 lowercase hex digits")
        return cls(algorithm, value)

    @classmethod
    def of_sha256(cls, hasher: hashlib._Hash) -> Digest:
        return cls("sha256", hasher.hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
