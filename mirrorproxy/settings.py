"""The mirror's settings: `--config FILE`, `P2P_MIRROR_*` variables and the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from core.ids import InvalidValue
from core.settings import ProcessSettings
from core.units import parse_size

Size = Annotated[int, BeforeValidator(lambda value: parse_size(value, "size"))]

DEFAULT_LISTEN = "127.0.0.1:65001"

# Settings whose values are never logged.
SECRET_FIELDS = {"tracker_token"}


def split_host_port(text: str, name: str) -> tuple[str, int]:
    """Split `HOST:PORT` (`[::1]:PORT` for IPv6) into its host and port."""
    host, separator, port = text.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidValue(f"invalid {name} {text!r}: expected HOST:PORT, for example {DEFAULT_LISTEN}")
    return host, int(port)


def default_data_dir() -> Path:
    """Return `$XDG_CACHE_HOME/p2p-fetch/mirror`, with `~/.cache` when the variable is unset."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "p2p-fetch" / "mirror"


def _check_http_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: expected an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{name}: expected a base URL without query or fragment, got {value!r}")
    return value.rstrip("/")


class MirrorSettings(ProcessSettings):
    """Everything `p2p-mirror` reads at start; sizes accept units such as 10GiB. Rate limits are in the host configuration."""

    model_config = SettingsConfigDict(env_prefix="P2P_MIRROR_", extra="forbid", validate_default=True)

    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT of the registry mirror and the local fetch API")
    tracker: str | None = Field(
        "http://127.0.0.1:6969",
        description="base URL of the tracker; empty to fetch every blob from its upstream directly",
    )
    tracker_token: str | None = Field(
        None, description="bearer token for the tracker's task API, when it has one"
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="directory of the blob cache; default under the user's cache directory",
    )
    upstreams: dict[str, str] = Field(
        default_factory=dict,
        description="registry host (docker.io, registry.local:5000) -> base URL of its registry API",
    )
    default_upstream: str | None = Field(
        None, description="registry host used for requests without ?ns=; default the first upstream"
    )
    cache_quota: Size = Field(
        10 * 1024**3, description="bytes the cached blobs may take; the least recently used are evicted"
    )
    bittorrent_listen: str = Field(
        "0.0.0.0:6881", description="libtorrent listen interface HOST:PORT; port 0 picks a free port"
    )
    location: str | None = Field(
        None, description="this host's place, e.g. dc1/rack7, sent to the tracker with every announce"
    )
    host_config: Path | None = Field(
        None,
        description="TOML file of the host's rate and connection limits; default $P2P_HOST_CONFIG, "
        "else /etc/p2p-fetch/host.toml when it exists",
    )
    task_timeout: float = Field(
        60.0, gt=0, le=3600,
        description="seconds to wait for the tracker to have a task's metainfo before fetching from the upstream",
    )
    swarm_stall_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="seconds without a new piece from the swarm before fetching from the upstream",
    )
    tracker_timeout: float = Field(5.0, gt=0, le=300, description="seconds for one request to the tracker")
    upstream_connect_timeout: float = Field(10.0, gt=0, le=300, description="seconds to connect to an upstream")
    upstream_read_timeout: float = Field(
        60.0, gt=0, le=3600, description="seconds without a byte from an upstream before the request fails"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @model_validator(mode="before")
    @classmethod
    def _reject_moved_limits(cls, values: object) -> object:
        if isinstance(values, dict):
            for key in ("upload_limit", "download_limit"):
                if key in values:
                    raise ValueError(
                        f"{key} is a setting of the host configuration now: move it to the file "
                        "named by host_config (default /etc/p2p-fetch/host.toml)"
                    )
        return values

    @field_validator("listen", "bittorrent_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value, "address")
        return value

    @field_validator("tracker")
    @classmethod
    def _check_tracker(cls, value: str | None) -> str | None:
        if not value:
            return None
        return _check_http_url(value, "tracker")

    @field_validator("upstreams")
    @classmethod
    def _check_upstreams(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for registry, url in value.items():
            if not registry or "/" in registry or registry != registry.strip():
                raise ValueError(f"expected a registry host such as docker.io or registry.local:5000, got {registry!r}")
            checked[registry] = _check_http_url(url, f"upstream {registry}")
        return checked

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return value.upper()

    @model_validator(mode="after")
    def _check_default_upstream(self) -> MirrorSettings:
        if self.default_upstream is not None and self.default_upstream not in self.upstreams:
            known = ", ".join(self.upstreams) or "none"
            raise ValueError(
                f"default_upstream {self.default_upstream!r} is not one of the upstreams ({known}); "
                "add it with --upstream REGISTRY=URL"
            )
        return self

    @property
    def default_registry(self) -> str | None:
        """The registry host that serves requests without ?ns=."""
        if self.default_upstream:
            return self.default_upstream
        return next(iter(self.upstreams), None)

    @property
    def announce_params(self) -> dict[str, str]:
        return {"location": self.location} if self.location else {}
