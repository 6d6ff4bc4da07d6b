"""Settings of one process's libtorrent session."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SwarmSettings(BaseModel):
    """Settings of a process's swarm session; every rate is in bytes per second, 0 meaning no limit."""

    listen_interfaces: str = Field(
        default="0.0.0.0:6881",
        description="libtorrent listen_interfaces, e.g. 127.0.0.1:0 (port 0 picks a free port)",
    )
    peer_id_prefix: str = Field(
        default="-PF0100-",
        description="start of the 20-byte peer id; seeders use -PS so downloaders can count their bytes apart",
    )
    announce_params: dict[str, str] = Field(
        default_factory=dict,
        description="host labels appended to every announce URL, e.g. location=dc1/rack7",
    )
    upload_limit: int = Field(default=0, ge=0, description="session upload limit, bytes/s")
    download_limit: int = Field(default=0, ge=0, description="session download limit, bytes/s")
    connections_limit: int = Field(default=400, ge=2, description="open peer connections, whole session")
    task_connections_limit: int = Field(default=200, ge=2, description="open peer connections per task")
    disk_io: Literal["posix", "pread", "mmap", "default"] = Field(
        default="posix",
        description="libtorrent disk I/O back end; posix keeps memory flat and was fastest on a LAN",
    )
