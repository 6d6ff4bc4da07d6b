"""The seeder's settings: `--config FILE`, `P2P_SEEDER_*` variables and the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.ids import InvalidValue
from core.settings import ProcessSettings
from core.units import parse_size

Size = Annotated[int, BeforeValidator(lambda value: parse_size(value, "size"))]

# Settings whose values are never logged.
SECRET_FIELDS = {"tracker_token"}


def split_host_port(text: str, name: str) -> tuple[str, int]:
    """Split `HOST:PORT` (`[::1]:PORT` for IPv6) into its host and port."""
    host, separator, port = text.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidValue(f"invalid {name} {text!r}: expected HOST:PORT, for example 127.0.0.1:7000")
    return host, int(port)


def default_data_dir() -> Path:
    """Return `$XDG_CACHE_HOME/p2p-fetch/seeder`, with `~/.cache` when the variable is unset."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "p2p-fetch" / "seeder"


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SeederSettings(ProcessSettings):
    """Everything `p2p-seeder` reads at start; sizes accept units such as 64MiB."""

    model_config = SettingsConfigDict(env_prefix="P2P_SEEDER_")

    listen: str = Field("127.0.0.1:7000", description="HOST:PORT of the HTTP API")
    tracker: str = Field("http://127.0.0.1:6969", description="base URL of the tracker")
    tracker_token: str | None = Field(
        None, description="bearer token for the tracker's task and seeder API, when it has one"
    )
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="directory of the cache, temp files and seeder id; default under the user's cache directory",
    )
    advertise_url: str | None = Field(
        None, description="base URL of the HTTP API as the tracker should reach it; default http://LISTEN"
    )
    bittorrent_listen: str | None = Field(
        None,
        description="HOST:PORT where the BitTorrent session listens; default the API's host, port 0 (any free port)",
    )
    heartbeat_interval: float = Field(3.0, gt=0, le=300, description="seconds between heartbeats to the tracker")
    cache_quota: Size = Field(
        100 * 1024**3, description="bytes the cached files may take; the least recently used are evicted, 0 = no quota"
    )
    max_ingests: int = Field(4, ge=1, le=64, description="ingests that run at the same time; more wait in a queue")
    parallel_ranges: int = Field(
        4, ge=1, le=32, description="connections per ingest when the origin supports Range requests"
    )
    segment_size: Size = Field(
        4 * 1024**2,
        ge=64 * 1024,
        description="bytes of each ranged request, rounded up to whole pieces",
    )
    hash_buffer: Size = Field(
        32 * 1024**2,
        ge=0,
        description="bytes an ingest may hold in memory while the sha256 waits for earlier ranges",
    )
    origin_connect_timeout: float = Field(10.0, gt=0, description="seconds to connect to the origin")
    origin_read_timeout: float = Field(30.0, gt=0, description="seconds without a byte from the origin before a retry")
    origin_attempts: int = Field(
        5, ge=1, le=100, description="attempts per origin request that makes no progress (5xx, 429, connection errors)"
    )
    retry_max_delay: float = Field(
        30.0, gt=0, description="seconds of the longest wait between attempts, and the most Retry-After honoured"
    )
    host_config: Path | None = Field(
        None,
        description="TOML file of the host's rate and connection limits; default $P2P_HOST_CONFIG, "
        "else /etc/p2p-fetch/host.toml when it exists",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value, "listen")
        return value

    @field_validator("bittorrent_listen")
    @classmethod
    def _check_bittorrent_listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value, "bittorrent_listen")
        return value

    @field_validator("tracker", "advertise_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return value.upper()

    @property
    def api_url(self) -> str:
        """The base URL the tracker uses to reach this seeder's API."""
        if self.advertise_url:
            return self.advertise_url
        host, port = split_host_port(self.listen, "listen")
        if host in ("0.0.0.0", "::"):
            raise InvalidValue(
                f"setting 'advertise_url' is required when 'listen' is the wildcard address {self.listen!r}"
            )
        return f"http://{join_host_port(host, port)}"

    @property
    def session_listen(self) -> str:
        """The libtorrent listen interface of the seeding session."""
        if self.bittorrent_listen:
            return self.bittorrent_listen
        host, _ = split_host_port(self.listen, "listen")
        return join_host_port(host, 0)
