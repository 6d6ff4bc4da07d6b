"""The tracker's settings: command line, `P2P_TRACKER_*` variables, a TOML file, defaults."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import ProcessSettings
from core.units import parse_size

# Query parameters of presigned and signed URLs that change from one request
# of the same object to the next: signatures, expiry times and credentials.
# They come from AWS S3 (SigV4 `X-Amz-*`, SigV2 `AWSAccessKeyId`, `Signature`,
# `Expires`), Google Cloud Storage (V4 `X-Goog-*`, V2 `GoogleAccessId`),
# CloudFront (`Policy`, `Signature`, `Key-Pair-Id`) and Akamai token auth
# (`hdnts`, `__token__`). A trailing `*` matches any suffix, and matching
# ignores case.
DEFAULT_VOLATILE_QUERY_PARAMETERS = [
    "X-Amz-*",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
    "Key-Pair-Id",
    "Policy",
    "X-Goog-*",
    "GoogleAccessId",
    "hdnts",
    "__token__",
]


@dataclass(frozen=True)
class ListenAddress:
    """A `HOST:PORT` address, with an IPv6 host in brackets (`[::1]:6969`)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        host, separator, port_text = text.rpartition(":")
        if not separator or not host:
            raise ValueError(f"expected HOST:PORT such as 127.0.0.1:6969, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"put an IPv6 host in brackets, as in [::1]:6969, got {text!r}")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"expected a port from 1 to 65535, got {port_text!r}")
        return cls(host, int(port_text))

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class TrackerSettings(ProcessSettings):
    """Settings of one `p2p-tracker` process."""

    model_config = SettingsConfigDict(env_prefix="P2P_TRACKER_", extra="forbid", validate_default=True)

    listen: str = Field(default="127.0.0.1:6969", description="HOST:PORT the HTTP server binds to")
    data_dir: Path = Field(description="directory of the task database (tasks and metainfo)")
    public_url: str | None = Field(
        default=None,
        description="base URL at which peers and seeders reach this tracker, e.g. "
        "http://tracker.dc1:6969; defaults to http://LISTEN",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token required by the task and seeder API; announce and scrape stay open",
    )
    announce_interval: int = Field(
        default=30, ge=1, le=3600, description="seconds between a peer's regular announces"
    )
    min_announce_interval: int = Field(
        default=10, ge=1, le=3600, description="seconds a peer must wait between any two announces"
    )
    max_numwant: int = Field(
        default=200, ge=1, le=10_000, description="maximum number of peers returned by one announce"
    )
    max_scrape_info_hashes: int = Field(
        default=100, ge=1, le=10_000, description="maximum number of info_hash values in one scrape"
    )
    trust_announced_ip: bool = Field(
        default=False,
        description="use the ip, ipv4 and ipv6 announce parameters instead of the connection's "
        "source address; only for networks where every client is trusted",
    )
    volatile_query_parameters: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VOLATILE_QUERY_PARAMETERS),
        description="URL query parameters left out of a task id (a trailing * matches any suffix)",
    )
    seeder_timeout: float = Field(
        default=15.0, gt=0, le=3600, description="seconds after its last heartbeat that a seeder is dropped"
    )
    seeder_request_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds to wait for a seeder to accept an ingest"
    )
    dispatch_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="times the tracker asks a seeder to ingest a task before marking it failed",
    )
    dispatch_interval: float = Field(
        default=2.0, gt=0, le=300, description="seconds between passes that hand pending tasks to seeders"
    )
    max_wait: float = Field(
        default=600.0, gt=0, le=3600, description="maximum seconds of the task API's ?wait parameter"
    )
    max_metainfo_size: int = Field(
        default=64 * 1024**2, description="largest torrent file accepted, in bytes (units such as 64MiB allowed)"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        ListenAddress.parse(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("max_metainfo_size", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> int:
        return parse_size(value, "max_metainfo_size")  # type: ignore[arg-type]

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return value.upper()

    @field_validator("volatile_query_parameters")
    @classmethod
    def _check_parameters(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or "*" in name[:-1]:
                raise ValueError(f"invalid parameter name {name!r}: * is allowed only at the end")
        return value

    @model_validator(mode="after")
    def _check_intervals(self) -> TrackerSettings:
        if self.min_announce_interval > self.announce_interval:
            raise ValueError(
                f"min_announce_interval ({self.min_announce_interval}) must not exceed "
                f"announce_interval ({self.announce_interval})"
            )
        return self

    @property
    def listen_address(self) -> ListenAddress:
        return ListenAddress.parse(self.listen)

    @property
    def base_url(self) -> str:
        """The URL peers and seeders use to reach this tracker."""
        if self.public_url:
            return self.public_url
        address = self.listen_address
        host = address.host
        # A wildcard address is no place to connect to, so peers get the host name.
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{address.port}"

    @property
    def announce_url(self) -> str:
        return f"{self.base_url}/announce"

    @property
    def peer_timeout(self) -> float:
        """Seconds after its last announce that a peer is dropped: two announce intervals."""
        return 2.0 * self.announce_interval


def listen_warning(settings: TrackerSettings) -> str | None:
    """Return the warning to log when the API is open to the network, or None."""
    if settings.api_token is not None or settings.listen_address.is_loopback():
        return None
    return (
        f"the task and seeder API on {settings.listen} has no bearer token: anyone who can reach it "
        "can create tasks and register seeders; set api_token (P2P_TRACKER_API_TOKEN)"
    )
