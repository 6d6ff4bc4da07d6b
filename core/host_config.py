"""The host configuration: rate and connection limits shared by every p2p-fetch process of a host.

One TOML file, read by `p2p-mirror`, `p2p-seeder` and by `p2p-fetch` when it
runs a session of its own:

    upload_limit = "100MiB/s"       # the whole host, all tasks together
    download_limit = "800Mbit/s"
    task_upload_limit = "50MiB/s"   # each task
    task_download_limit = 0         # 0 means no limit
    connections_limit = 400         # open peer connections, whole host
    task_connections_limit = 200    # open peer connections per task

Rates take a unit per second (`50MiB/s`, `100Mbit/s`) or a plain number of
bytes per second. The file is found at `--host-config`, else at
`$P2P_HOST_CONFIG`, else at /etc/p2p-fetch/host.toml when that exists; with
none of these every limit is off.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

from core.ids import InvalidValue
from core.units import parse_rate

DEFAULT_PATH = Path("/etc/p2p-fetch/host.toml")
PATH_VARIABLE = "P2P_HOST_CONFIG"



# libtorrent keeps rate limits in a signed 32-bit int.
MAX_RATE = 2**31 - 1


def parse_limit(value: object, name: str) -> int:
    """Parse a rate limit such as `50MiB/s` or `0` (none) into bytes/s; raise InvalidValue naming `name`."""
    rate = parse_rate(value, name)
    if rate > MAX_RATE:
        raise InvalidValue(
            f"invalid {name} {value!r}: libtorrent takes at most {MAX_RATE} bytes/s (about 17Gbit/s); "
            "use 0 for no limit"
        )
    return rate


def _parse_rate(value: object, info: ValidationInfo) -> int:
    return parse_limit(value, info.field_name or "rate")


Rate = Annotated[int, BeforeValidator(_parse_rate)]


class HostConfigError(InvalidValue):
    """The host configuration file is missing, not TOML, or has an invalid value; the message names it."""


class HostConfig(BaseModel):
    """The limits of one host; rates in bytes per second, 0 meaning no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload_limit: Rate = Field(0, description="upload rate of the whole host, all tasks together")
    download_limit: Rate = Field(0, description="download rate of the whole host, all tasks together")
    task_upload_limit: Rate = Field(0, description="upload rate of each task")
    task_download_limit: Rate = Field(0, description="download rate of each task")
    connections_limit: int = Field(400, ge=2, description="open peer connections of the whole host")
    task_connections_limit: int = Field(200, ge=2, description="open peer connections of each task")

    def session_limits(self) -> dict[str, int]:
        """Return the fields of swarm.SwarmSettings that this configuration sets."""
        return {
            "upload_limit": self.upload_limit,
            "download_limit": self.download_limit,
            "connections_limit": self.connections_limit,
            "task_connections_limit": self.task_connections_limit,
        }

    def task_limits(self, upload: int = 0, download: int = 0) -> tuple[int, int]:
        """Return the (upload, download) limits of a task that requests `upload` and `download`.

        A request may only lower the host's per-task limit, never lift it;
        0 means the task requests no limit of its own.
        """
        return _lower(upload, self.task_upload_limit), _lower(download, self.task_download_limit)


def _lower(requested: int, configured: int) -> int:
    """Return the lower of two limits where 0 means none."""
    if requested and configured:
        return min(requested, configured)
    return requested or configured


def host_config_path(explicit: Path | None = None) -> Path | None:
    """Return the path of the host configuration, or None when there is none.

    A path given on the command line or in $P2P_HOST_CONFIG must exist when
    it is read; the default path is used only when it exists.
    """
    if explicit is not None:
        return explicit
    from_environment = os.environ.get(PATH_VARIABLE)
    if from_environment:
        return Path(from_environment)
    if DEFAULT_PATH.exists():
        return DEFAULT_PATH
    return None


def load_host_config(explicit: Path | None = None) -> tuple[HostConfig, Path | None]:
    """Read and validate the host configuration; return it with the path it came from.

    Raises HostConfigError naming the file, the key and the value that is wrong.
    """
    path = host_config_path(explicit)
    if path is None:
        return HostConfig(), None
    return parse_host_config(_read(path), str(path)), path


def parse_host_config(values: dict, source: str) -> HostConfig:
    """Validate the keys of a host configuration read from `source` (a path, for messages)."""
    try:
        return HostConfig(**values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "(file)"
            if item["type"] == "extra_forbidden":
                known = ", ".join(HostConfig.model_fields)
                problems.append(f"unknown key {key!r}; the known keys are {known}")
            elif item["type"] == "value_error":
                # parse_rate's own message names the key, the value and the expected form.
                problems.append(item["msg"].removeprefix("Value error, "))
            else:
                problems.append(f"invalid {key} {item.get('input')!r}: {item['msg']}")
        raise HostConfigError(f"invalid host configuration {source}: " + "; ".join(problems)) from None


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise HostConfigError(
            f"host configuration {str(path)!r} not found; create it or point --host-config "
            f"(or ${PATH_VARIABLE}) at another file"
        ) from None
    except OSError as error:
        raise HostConfigError(f"cannot read host configuration {str(path)!r}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise HostConfigError(f"host configuration {str(path)!r} is not valid TOML: {error}") from None
