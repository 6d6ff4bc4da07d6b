"""The task API's JSON bodies, shared by the tracker, the seeder, the mirror and the CLI.

A task is one file or image layer that the swarm distributes. The tracker keys
it by digest or by URL, and one seeder ingests it from the origin. Every host
downloads it from the swarm once its metainfo is ready.

HTTP endpoints, all under `/api/v1`:

Tracker
    POST /tasks[?wait=SECONDS]       TaskRequest -> Task
    GET  /tasks/{id}[?wait=SECONDS]  -> Task
    GET  /tasks/{id}/metainfo        -> application/x-bittorrent
    PUT  /tasks/{id}/metainfo        body: the bencoded torrent, from the seeder
    PUT  /tasks/{id}/failure         TaskFailure, from the seeder
    PUT  /seeders/{id}               SeederHeartbeat
Seeder
    POST /ingest                     IngestRequest -> 202, then one of the two
                                     tracker PUTs above when the ingest ends
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

API_PREFIX = "/api/v1"

BITTORRENT_MEDIA_TYPE = "application/x-bittorrent"


class TaskState(StrEnum):
    PENDING = "pending"
    INGESTING = "ingesting"
    READY = "ready"
    FAILED = "failed"


class TaskRequest(BaseModel):
    """A request for the task of a URL, with what the seeder needs to fetch it."""

    url: str = Field(description="HTTP(S) URL of the content at the origin")
    digest: str | None = Field(default=None, description="sha256:<hex> of the content, when known")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers the origin needs (credentials); never stored on disk or logged",
    )
    piece_length: int | None = Field(default=None, description="torrent piece length in bytes")


class Task(BaseModel):
    """The tracker's view of one task."""

    id: str = Field(description="sha256:<hex> when the digest is known, else url:<hash of the URL>")
    url: str
    digest: str | None = None
    state: TaskState
    error: str | None = Field(default=None, description="why the task failed, for a person to act on")
    info_hash: str | None = Field(default=None, description="hex v1 info hash, once ready")
    metainfo_url: str | None = Field(default=None, description="path of the torrent file, once ready")
    size: int | None = Field(default=None, description="content length in bytes, once ready")
    seeder_id: str | None = None


class TaskFailure(BaseModel):
    """The reason an ingest failed, sent by the seeder to the tracker."""

    error: str


class SeederHeartbeat(BaseModel):
    """The heartbeat a live seeder sends the tracker every few seconds."""

    api_url: str = Field(description="base URL of the seeder's HTTP API, e.g. http://127.0.0.1:7000")
    peer_address: str = Field(description="HOST:PORT where the seeder's BitTorrent session listens")


class IngestRequest(BaseModel):
    """The tracker's request to a seeder: fetch this URL from the origin and seed it."""

    task_id: str
    url: str
    digest: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    piece_length: int | None = None
    announce_url: str = Field(description="announce URL to put into the metainfo")
