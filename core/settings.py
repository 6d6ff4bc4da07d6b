"""Loading typed settings from defaults, a TOML file, `P2P_*` variables and the command line."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.ids import InvalidValue

SettingsT = TypeVar("SettingsT", bound="ProcessSettings")


class ProcessSettings(BaseSettings):
    """Base of every process's settings; subclasses set `env_prefix`.

    Precedence, highest first: command-line options, environment variables,
    the TOML file, the defaults.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries both the command-line options and the TOML
        # file; load_settings merges them so the command line wins.
        return (init_settings, env_settings)


def read_toml(path: Path | None) -> dict[str, Any]:
    """Read a TOML settings file; a missing or malformed file raises InvalidValue."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise InvalidValue(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidValue(f"config file {str(path)!r} is not valid TOML: {error}") from None


def load_settings(
    cls: type[SettingsT], config_file: Path | None = None, **overrides: Any
) -> SettingsT:
    """Build validated settings; raise InvalidValue naming each bad setting.

    `overrides` are the command-line options; a None value means "not given".
    """
    file_values = read_toml(config_file)
    given = {key: value for key, value in overrides.items() if value is not None}

    # The environment must beat the file, so the file's keys that the
    # environment also sets are dropped before the merge.
    prefix = cls.model_config.get("env_prefix", "")
    env_keys = {
        name[len(prefix):].lower() for name in os.environ if prefix and name.startswith(prefix)
    }
    merged = {key: value for key, value in file_values.items() if key not in env_keys}
    merged.update(given)

    try:
        return cls(**merged)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"]) or "settings"
            problems.append(f"setting {location!r} (input {item.get('input')!r}): {item['msg']}")
        raise InvalidValue("invalid settings: " + "; ".join(problems)) from None


def log_settings(logger: logging.Logger, settings: ProcessSettings, secret_fields: set[str]) -> None:
    """Log the effective settings at start, with secrets masked."""
    values = settings.model_dump(mode="json")
    for name in secret_fields:
        if values.get(name):
            values[name] = "***"
    logger.info("effective settings", extra={"settings": values})
