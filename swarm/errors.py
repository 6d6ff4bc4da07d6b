"""Errors raised by the peer engine."""


class SwarmError(Exception):
    """A task failed inside the libtorrent session (a storage error, a bad torrent)."""


class InvalidMetainfo(SwarmError):
    """The bytes given as metainfo are not a single-file v1 torrent."""
