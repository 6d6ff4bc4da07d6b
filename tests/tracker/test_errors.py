"""The limiter that keeps a failing announce path from flooding the log."""

from __future__ import annotations

import time

from tracker.errors import ErrorLogLimiter


def test_limiter_counts_left_out_lines() -> None:
    limiter = ErrorLogLimiter(period=0.3)

    first = limiter.allow()
    quiet = [limiter.allow() for _ in range(5)]
    time.sleep(0.35)
    after = limiter.allow()

    assert first == 0
    assert quiet == [None] * 5
    assert after == 5
