"""`p2p-tracker`: the command that runs the tracker."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.ids import InvalidValue
from core.logs import configure_logging
from cli.single_machine import EmbeddedSeeder
from core.settings import load_settings
from tracker.server import StartupError, serve
from tracker.settings import TrackerSettings

EXIT_INVALID_SETTINGS = 2
EXIT_STARTUP_FAILED = 3


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", metavar="HOST:PORT", help="Address to serve HTTP on, e.g. 127.0.0.1:6969 or [::1]:6969.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the task database; created if missing.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with settings; P2P_TRACKER_* variables and these options override it.",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@click.option(
    "--embedded-seeder",
    is_flag=True,
    envvar="P2P_TRACKER_EMBEDDED_SEEDER",
    help="Also run a seeder in this process, caching under DATA_DIR/seeder: all one machine needs. "
    "P2P_SEEDER_* variables configure it.",
)
def main(
    listen: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    log_level: str | None,
    embedded_seeder: bool,
) -> None:
    """Run the p2p-fetch tracker: announce, scrape and the task API."""
    try:
        settings = load_settings(
            TrackerSettings, config_file, listen=listen, data_dir=data_dir, log_level=log_level
        )
    except InvalidValue as error:
        click.echo(f"p2p-tracker: {error}", err=True)
        sys.exit(EXIT_INVALID_SETTINGS)

    configure_logging(settings.log_level)
    seeder = None
    if embedded_seeder:
        try:
            seeder = EmbeddedSeeder(settings)
        except InvalidValue as error:
            click.echo(f"p2p-tracker: embedded seeder: {error}", err=True)
            sys.exit(EXIT_INVALID_SETTINGS)
        seeder.start()
    try:
        serve(settings)
    except StartupError as error:
        click.echo(f"p2p-tracker: {error}", err=True)
        sys.exit(EXIT_STARTUP_FAILED)
    finally:
        if seeder is not None:
            seeder.stop()
