"""`p2p-seeder`: the command that runs a seeder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.host_config import PATH_VARIABLE, load_host_config
from core.ids import InvalidValue
from core.logs import configure_logging
from core.settings import load_settings
from seeder.server import StartupError, serve
from seeder.settings import SeederSettings

EXIT_INVALID_SETTINGS = 2
EXIT_STARTUP_FAILED = 3


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 stopped by a signal, 2 invalid settings, 3 start-up failed.",
)
@click.option("--listen", metavar="HOST:PORT", help="Address of the HTTP API, e.g. 127.0.0.1:7000.")
@click.option("--tracker", metavar="URL", help="Base URL of the tracker, e.g. http://127.0.0.1:6969.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the cache, temp files and seeder id; created if missing.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with settings; P2P_SEEDER_* variables and these options override it.",
)
@click.option(
    "--host-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML file of the host's rate and connection limits [${PATH_VARIABLE}, else /etc/p2p-fetch/host.toml "
    "when it exists].",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
def main(
    listen: str | None,
    tracker: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    host_config: Path | None,
    log_level: str | None,
) -> None:
    """Run a p2p-fetch seeder: fetch tasks from their origin once, and seed them from the cache."""
    try:
        settings = load_settings(
            SeederSettings,
            config_file,
            listen=listen,
            tracker=tracker,
            data_dir=data_dir,
            host_config=host_config,
            log_level=log_level,
        )
        limits, _ = load_host_config(settings.host_config)
    except InvalidValue as error:
        click.echo(f"p2p-seeder: {error}", err=True)
        sys.exit(EXIT_INVALID_SETTINGS)

    configure_logging(settings.log_level)
    try:
        serve(settings, limits)
    except StartupError as error:
        click.echo(f"p2p-seeder: {error}", err=True)
        sys.exit(EXIT_STARTUP_FAILED)
