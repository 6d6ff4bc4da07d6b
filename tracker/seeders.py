"""The live seeders and the choice of a task's seeder by rendezvous hashing."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from core.ids import InvalidValue
from core.tasks import SeederHeartbeat

_SEEDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Seeder:
    """A seeder as its last heartbeat described it."""

    id: str
    api_url: str
    peer_address: str
    last_heartbeat: float


def check_heartbeat(seeder_id: str, heartbeat: SeederHeartbeat) -> None:
    """Raise InvalidValue naming the first malformed field of a heartbeat."""
    if not _SEEDER_ID.match(seeder_id):
        raise InvalidValue(
            f"invalid seeder id {seeder_id!r}: expected 1 to 64 letters, digits, '.', '_' or '-'"
        )
    if not heartbeat.api_url.startswith(("http://", "https://")):
        raise InvalidValue(f"invalid api_url {heartbeat.api_url!r}: expected an http:// or https:// URL")
    host, separator, port = heartbeat.peer_address.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValue(
            f"invalid peer_address {heartbeat.peer_address!r}: expected HOST:PORT such as 10.0.0.5:6881"
        )


def rendezvous_score(seeder_id: str, task_id: str) -> int:
    """Return the weight of a (seeder, task) pair; the task goes to the seeder with the highest."""
    digest = hashlib.sha256(f"{seeder_id}\x00{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class SeederRegistry:
    """Seeders that sent a heartbeat within `timeout` seconds.

    Rendezvous (highest random weight) hashing maps a task to the same seeder
    for as long as that seeder lives, and moves only that seeder's tasks when
    it goes away.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seeders: dict[str, Seeder] = {}

    def heartbeat(self, seeder_id: str, heartbeat: SeederHeartbeat) -> bool:
        """Record a heartbeat; return True when the seeder was not live before."""
        known = self.is_live(seeder_id)
        self._seeders[seeder_id] = Seeder(seeder_id, heartbeat.api_url, heartbeat.peer_address, time.monotonic())
        return not known

    def is_live(self, seeder_id: str) -> bool:
        seeder = self._seeders.get(seeder_id)
        return seeder is not None and time.monotonic() - seeder.last_heartbeat <= self.timeout

    def live(self) -> list[Seeder]:
        return [seeder for seeder in self._seeders.values() if self.is_live(seeder.id)]

    def get(self, seeder_id: str) -> Seeder | None:
        return self._seeders.get(seeder_id) if self.is_live(seeder_id) else None

    def expire(self) -> list[str]:
        """Forget the seeders whose heartbeat is older than the timeout; return their ids."""
        dead = [seeder_id for seeder_id in self._seeders if not self.is_live(seeder_id)]
        for seeder_id in dead:
            del self._seeders[seeder_id]
        return dead

    def choose(self, task_id: str) -> Seeder | None:
        """Return the live seeder of `task_id`, or None when no seeder is live."""
        candidates = self.live()
        if not candidates:
            return None
        return max(candidates, key=lambda seeder: rendezvous_score(seeder.id, task_id))
