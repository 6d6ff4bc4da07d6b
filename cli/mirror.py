"""`p2p-mirror`: the host daemon, a registry mirror and the local fetch API over one swarm session."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.host_config import PATH_VARIABLE, load_host_config
from core.ids import InvalidValue
from core.logs import configure_logging
from core.settings import load_settings
from mirrorproxy.server import StartupError, serve
from mirrorproxy.settings import MirrorSettings

EXIT_INVALID_SETTINGS = 2
EXIT_STARTUP_FAILED = 3


def _parse_upstreams(values: tuple[str, ...]) -> dict[str, str] | None:
    """Turn `REGISTRY=URL` options into a map, in the order given; None when none were given."""
    if not values:
        return None
    upstreams: dict[str, str] = {}
    for value in values:
        registry, separator, url = value.partition("=")
        if not separator or not registry or not url:
            raise click.BadParameter(
                f"expected REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000, got {value!r}",
                param_hint="--upstream",
            )
        if registry in upstreams:
            raise click.BadParameter(f"registry {registry!r} is given twice", param_hint="--upstream")
        upstreams[registry] = url
    return upstreams


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", metavar="HOST:PORT", help="Address of the registry mirror and the fetch API [127.0.0.1:65001].")
@click.option("--tracker", metavar="URL", help="Base URL of the tracker; an empty string fetches every blob from its upstream.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the blob cache; created if missing.",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="REGISTRY=URL",
    help="Upstream registry by host name, e.g. docker.io=https://registry-1.docker.io; repeat for several. "
    "The first is the default for requests without ?ns=.",
)
@click.option("--default-upstream", metavar="REGISTRY", help="Registry host for requests without ?ns=, if not the first.")
@click.option("--cache-quota", metavar="SIZE", help="Bytes the cached blobs may take, e.g. 20GiB.")
@click.option("--bittorrent-listen", metavar="HOST:PORT", help="libtorrent listen interface; port 0 picks a free port.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with settings; P2P_MIRROR_* variables and these options override it.",
)
@click.option(
    "--host-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML file of the host's rate and connection limits [${PATH_VARIABLE}, else /etc/p2p-fetch/host.toml "
    "when it exists]. SIGHUP reloads it.",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
def main(
    listen: str | None,
    tracker: str | None,
    data_dir: Path | None,
    upstreams: tuple[str, ...],
    default_upstream: str | None,
    cache_quota: str | None,
    bittorrent_listen: str | None,
    config_file: Path | None,
    host_config: Path | None,
    log_level: str | None,
) -> None:
    """Run p2p-mirror: a registry mirror whose blobs come through the swarm, and the local fetch API."""
    try:
        settings = load_settings(
            MirrorSettings,
            config_file,
            listen=listen,
            tracker=tracker,
            data_dir=data_dir,
            upstreams=_parse_upstreams(upstreams),
            default_upstream=default_upstream,
            cache_quota=cache_quota,
            bittorrent_listen=bittorrent_listen,
            host_config=host_config,
            log_level=log_level,
        )
        limits, _ = load_host_config(settings.host_config)
    except InvalidValue as error:
        click.echo(f"p2p-mirror: {error}", err=True)
        sys.exit(EXIT_INVALID_SETTINGS)

    configure_logging(settings.log_level)
    try:
        serve(settings, limits)
    except StartupError as error:
        click.echo(f"p2p-mirror: {error}", err=True)
        sys.exit(EXIT_STARTUP_FAILED)
