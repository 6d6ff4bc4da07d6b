"""`p2p-fetch URL`: download an HTTP(S) URL through the swarm."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from cli.fetching import (
    FetchError,
    FetchOptions,
    FetchTimedOut,
    IntegrityFailed,
    OriginFailed,
    fetch,
)
from cli.mirror_client import DEFAULT_MIRROR_URL, fetch_via_mirror, mirror_is_running
from cli.task_client import TrackerUnavailable
from core.host_config import PATH_VARIABLE, load_host_config, parse_limit
from core.ids import Digest, InvalidValue
from core.logs import configure_logging
from core.units import format_size

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ORIGIN = 3
EXIT_INTEGRITY = 4
EXIT_TIMEOUT = 5
EXIT_TRACKER = 6

EPILOG = f"""\b
Exit codes:
  {EXIT_OK}  the file is at the output path, complete and verified
  {EXIT_ERROR}  the download failed in the swarm or on this host (disk full, say)
  {EXIT_USAGE}  invalid command line
  {EXIT_ORIGIN}  the origin failed: not found, server errors, unreachable
  {EXIT_INTEGRITY}  the content does not match its digest
  {EXIT_TIMEOUT}  not done within --timeout
  {EXIT_TRACKER}  the tracker or the --mirror is unreachable, or rejected the request
"""


def _default_output(url: str) -> Path:
    name = unquote(Path(urlsplit(url).path).name)
    if not name or name in (".", ".."):
        raise click.UsageError(f"cannot take a file name from {url!r}; pass -o/--output")
    return Path(name)


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, separator, content = value.partition(":")
        if not separator or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {value!r}", param_hint="--header")
        headers[name.strip()] = content.strip()
    return headers


class _Reporter:
    """Show progress: a rich bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self._bar = None
        self._last_line = 0.0

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        if self.terminal:
            self._update_bar(progress)
        elif time.monotonic() - self._last_line >= 2 or progress.complete:
            self._last_line = time.monotonic()
            click.echo(
                f"{format_size(progress.bytes_done)} of {format_size(progress.size)}, "
                f"{format_size(progress.download_rate)}/s, {progress.peers} peers",
                err=True,
            )

    def _update_bar(self, progress) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if self._bar is None:
            self._bar = Progress(
                BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TextColumn("{task.fields[peers]} peers"), TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._bar_task = self._bar.add_task("fetch", total=progress.size, peers=0)
        self._bar.update(self._bar_task, completed=progress.bytes_done, peers=progress.peers)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@click.command(epilog=EPILOG)
@click.argument("url")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file. Default: the file name of the URL, in the current directory.")
@click.option("--tracker", envvar="P2P_FETCH_TRACKER", show_envvar=True,
              help="Base URL of the p2p-tracker, e.g. http://tracker:8080. Needed unless a p2p-mirror runs.")
@click.option("--mirror", "mirror_url", envvar="P2P_FETCH_MIRROR", show_envvar=True,
              help=f"Base URL of this host's p2p-mirror. Default: {DEFAULT_MIRROR_URL} when one responds there; "
              "without a mirror, p2p-fetch joins the swarm with a session of its own.")
@click.option("--no-mirror", is_flag=True, help="Join the swarm with a session of its own even if a p2p-mirror runs.")
@click.option("--token", envvar="P2P_FETCH_TOKEN", show_envvar=True,
              help="Bearer token of the tracker's task API, when it requires one.")
@click.option("--digest", help="Expected content digest, sha256:<64 hex digits>.")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="HTTP header the origin needs; repeatable. Sent to the seeder, never logged.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds for the whole fetch, ingest included.")
@click.option("--seed-time", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to keep seeding to other hosts after the download completes.")
@click.option("--listen", default="0.0.0.0:0", show_default=True,
              help="Address and port the BitTorrent session listens on (port 0 picks a free one).")
@click.option("--download-limit", default="0", show_default=True,
              help="Download limit of this fetch, e.g. 50MiB/s or 400Mbit/s; 0 for none. "
              "It only lowers the host's task_download_limit, here or in the p2p-mirror.")
@click.option("--upload-limit", default="0", show_default=True,
              help="Upload limit of this fetch, e.g. 50MiB/s; 0 for none. It only lowers the host's task_upload_limit.")
@click.option("--host-config", type=click.Path(dir_okay=False, path_type=Path),
              help=f"TOML file of the host's rate and connection limits, read when p2p-fetch runs its own session "
              f"[${PATH_VARIABLE}, else /etc/p2p-fetch/host.toml when it exists].")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON summary at the end: size, seconds, bytes from the seeder and from peers.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(url, output, tracker, mirror_url, no_mirror, token, digest, headers, timeout, seed_time, listen,
         download_limit, upload_limit, host_config, quiet, as_json, log_level) -> None:
    """Download URL through the p2p-fetch swarm.

    The file appears at the output path only once it is complete and its
    content verified; any failure leaves nothing there.
    """
    configure_logging(log_level)
    if urlsplit(url).scheme not in ("http", "https"):
        raise click.BadParameter(f"expected an http:// or https:// URL, got {url!r}", param_hint="URL")
    try:
        options = FetchOptions(
            url=url,
            output=output or _default_output(url),
            tracker_url=tracker or "",
            digest=Digest.parse(digest) if digest else None,
            headers=_parse_headers(headers),
            timeout=timeout,
            seed_time=seed_time,
            token=token,
            listen_interfaces=listen,
            download_limit=parse_limit(download_limit, "--download-limit"),
            upload_limit=parse_limit(upload_limit, "--upload-limit"),
        )
    except InvalidValue as error:
        raise click.UsageError(str(error)) from None

    mirror = None
    if not no_mirror:
        candidate = mirror_url or DEFAULT_MIRROR_URL
        if mirror_is_running(candidate):
            mirror = candidate
        elif mirror_url:
            click.echo(f"p2p-fetch: p2p-mirror at {mirror_url} unreachable; start it or pass --no-mirror", err=True)
            sys.exit(EXIT_TRACKER)
    if mirror is None and not tracker:
        raise click.UsageError(
            f"no p2p-mirror responds at {mirror_url or DEFAULT_MIRROR_URL}; pass --tracker URL (or set P2P_FETCH_TRACKER)"
        )
    if mirror is None:
        # The mirror applies the host configuration itself; a session of our own must.
        try:
            options.host_config, _ = load_host_config(host_config)
        except InvalidValue as error:
            click.echo(f"p2p-fetch: {error}", err=True)
            sys.exit(EXIT_USAGE)

    reporter = _Reporter(quiet or as_json)
    try:
        if mirror is not None:
            summary = fetch_via_mirror(options, mirror, on_progress=reporter)
        else:
            summary = fetch(options, on_progress=reporter)
    except (FetchError, TrackerUnavailable, OSError) as error:
        reporter.close()
        click.echo(f"p2p-fetch: {error}", err=True)
        sys.exit(_exit_code(error))
    reporter.close()

    if as_json:
        click.echo(json.dumps(summary.as_json()))
    elif not quiet and summary.via == "mirror":
        click.echo(f"{summary.output}: {format_size(summary.size)} in {summary.seconds:.1f} s through p2p-mirror", err=True)
    elif not quiet:
        click.echo(
            f"{summary.output}: {format_size(summary.size)} in {summary.seconds:.1f} s, "
            f"{format_size(summary.bytes_from_seeder)} from the seeder, "
            f"{format_size(summary.bytes_from_peers)} from peers",
            err=True,
        )


def _exit_code(error: Exception) -> int:
    if isinstance(error, OriginFailed):
        return EXIT_ORIGIN
    if isinstance(error, IntegrityFailed):
        return EXIT_INTEGRITY
    if isinstance(error, FetchTimedOut):
        return EXIT_TIMEOUT
    if isinstance(error, TrackerUnavailable):
        return EXIT_TRACKER
    return EXIT_ERROR
