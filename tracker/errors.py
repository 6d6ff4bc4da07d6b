"""The errors of the announce and scrape endpoints."""

from __future__ import annotations

import time
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


class ErrorLogLimiter:
    """Allow one error log line per `period` seconds and count the lines left out.

    A bug on the announce path would otherwise write one traceback per
    request, thousands per second.
    """

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self.suppressed = 0
        self._last = float("-inf")

    def allow(self) -> int | None:
        """Return the number of lines left out since the last allowed one, or None to stay quiet."""
        now = time.monotonic()
        if now - self._last < self.period:
            self.suppressed += 1
            return None
        self._last = now
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed
