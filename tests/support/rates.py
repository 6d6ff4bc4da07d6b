"""Steady-state transfer rates from libtorrent's byte counters, sampled over a window.

libtorrent banks unused quota up to three seconds of the limit
(`bandwidth_channel::update_quota` in its src/bandwidth_limit.cpp) and spends
it at once, so a rate read over one second swings from 0 to several times the
limit. Over ten seconds or more it settles near the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from swarm import TaskHandle

MB = 1_000_000


@dataclass(frozen=True)
class Window:
    """Bytes counted between two samples and the seconds between them."""

    bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second over the window."""
        return self.bytes / self.seconds


def payload_downloaded(task: TaskHandle) -> int:
    """Payload bytes the task received since it was added (libtorrent's total_payload_download)."""
    # NOTE: TaskProgress has no session-lifetime byte counter for downloads, so this reads the handle.
    return task._handle.status().total_payload_download


def payload_uploaded(task: TaskHandle) -> int:
    """Payload bytes the task sent since it was added (libtorrent's total_payload_upload)."""
    return task._handle.status().total_payload_upload


def measure(counters: list[Callable[[], int]], warm_up: float, window: float) -> list[Window]:
    """Wait `warm_up` seconds, then return what each counter gained over the next `window` seconds."""
    time.sleep(warm_up)
    started = time.monotonic()
    first = [counter() for counter in counters]
    time.sleep(window)
    last = [counter() for counter in counters]
    seconds = time.monotonic() - started
    return [Window(after - before, seconds) for before, after in zip(first, last)]


def connect(task: TaskHandle, listen_port: int) -> None:
    """Connect a task to a peer on 127.0.0.1 directly, with no tracker."""
    task._handle.connect_peer(("127.0.0.1", listen_port))
