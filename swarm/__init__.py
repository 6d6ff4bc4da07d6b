"""The peer engine every p2p-fetch process shares: one libtorrent session and its tasks.

This package imports no other package of p2p-fetch except the shared types in core/.
"""

from swarm.errors import InvalidMetainfo, SwarmError
from swarm.session import SEEDER_PEER_ID_PREFIX, Session
from swarm.settings import SwarmSettings
from swarm.task import TaskHandle, TaskProgress

__all__ = [
    "InvalidMetainfo",
    "SEEDER_PEER_ID_PREFIX",
    "Session",
    "SwarmError",
    "SwarmSettings",
    "TaskHandle",
    "TaskProgress",
]
