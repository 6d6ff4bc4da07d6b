"""The errors of the announce and scrape endpoints."""

from __future__ import annotations

from enum import StrEnum


class RejectCause(StrEnum):
    """The cause of a rejected announce or scrape, from a fixed set that labels metrics."""

    INVALID = "invalid"
    UNREGISTERED = "unregistered"


class Rejected(Exception):
    """A request the tracker refuses, with a message meant for the client.

    The endpoint sends the message as the bencoded `failure reason`, so it must
    name the problem and the value and must not leak anything internal.
    """

    def __init__(self, message: str, cause: RejectCause = RejectCause.INVALID) -> None:
        super().__init__(message)
        self.cause = cause
