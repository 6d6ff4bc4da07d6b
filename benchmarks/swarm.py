"""The swarm benchmark: p2p-fetch, p2p-mirror, direct HTTP and plain BitTorrent on a namespace testbed.

    python -m benchmarks.swarm --hosts 4,8,16 --size 256MiB --rate 100Mbit/s

For each number of hosts, every method gets the blob to every client host at
once over links shaped to the rate. The output folder receives the raw
results (results.json, rewritten after every run), a markdown table and the
plots. Needs root for the network namespaces.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from benchmarks.methods import LABELS, METHODS, RunResult, make_blob
from benchmarks.report import (
    markdown_table,
    plot_completion_cdf,
    plot_completion_vs_hosts,
    plot_swarm_throughput,
)
from benchmarks.testbed import (
    DEFAULT_PREFIX,
    MAX_HOSTS,
    LeftoverNamespaces,
    NamespacesUnavailable,
    Testbed,
    raise_on_sigterm,
)
from core.ids import InvalidValue
from core.units import parse_rate, parse_size

EXIT_UNAVAILABLE = 3
EXIT_LEFTOVERS = 4

ALL_METHODS = ("p2p-fetch", "mirror", "http", "bittorrent")


def _parse_hosts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, such as 4,8,16, got {text!r}", param_hint="--hosts"
        ) from None
    if not counts or any(not 1 <= count <= MAX_HOSTS for count in counts):
        raise click.BadParameter(f"expected numbers from 1 to {MAX_HOSTS} such as 4,8,16, got {text!r}",
                                 param_hint="--hosts")
    return sorted(set(counts))


def _parse_methods(text: str) -> list[str]:
    methods = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [method for method in methods if method not in ALL_METHODS]
    if unknown or not methods:
        raise click.BadParameter(
            f"unknown method {', '.join(unknown) or text!r}: expected some of {', '.join(ALL_METHODS)}",
            param_hint="--methods",
        )
    return methods


def _machine() -> dict[str, object]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "python": platform.python_version()}


def _remove_copies(run_dir: Path) -> None:
    """Delete every host's copy and the seeder's cache of a finished run, keeping its logs."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.is_dir() and path.name != "logs":
            shutil.rmtree(path, ignore_errors=True)


def write_outputs(output_dir: Path, settings: dict, results: list[RunResult]) -> None:
    """Write results.json, table.md and, once there are results, the plots."""
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {**settings, "results": [dataclasses.asdict(result) for result in results]}
    (output_dir / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    (output_dir / "table.md").write_text(markdown_table(results))
    if results:
        plot_completion_vs_hosts(results, output_dir / "completion-vs-hosts.png")
        plot_completion_cdf(results, output_dir / "completion-cdf.png")
        plot_swarm_throughput(results, output_dir / "receive-rate.png")


def load_results(paths: Sequence[Path]) -> tuple[dict, list[RunResult]]:
    """Read results.json files; return the settings of the first and every run of all, ordered by hosts."""
    settings: dict = {}
    results: list[RunResult] = []
    for path in paths:
        record = json.loads(path.read_text())
        results += [RunResult(**item) for item in record.pop("results")]
        if not settings:
            settings = record
        else:
            settings.setdefault("merged", []).append(record)
    results.sort(key=lambda result: (result.hosts, ALL_METHODS.index(_method_name(result.method))))
    return settings, results


def _method_name(label: str) -> str:
    return next(name for name, known in LABELS.items() if known == label)


@click.command()
@click.option("--hosts", "hosts_text", default="4,8,16", show_default=True,
              help="Numbers of client hosts to measure, separated by commas.")
@click.option("--size", "size_text", default="256MiB", show_default=True, help="Size of the blob, e.g. 256MiB.")
@click.option("--rate", "rate_text", default="100Mbit/s", show_default=True,
              help="Rate of every host's link, each direction, e.g. 100Mbit/s.")
@click.option("--methods", "methods_text", default=",".join(ALL_METHODS), show_default=True,
              help="Methods to run, separated by commas.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/tmp/p2p-swarm-bench"), show_default=True,
              help="Folder for the blob, every host's copy and the logs; emptied first.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/results"), show_default=True,
              help="Folder for results.json, table.md and the plots.")
@click.option("--timeout", "run_timeout", type=click.FloatRange(min=10), default=None,
              help="Seconds one run may take before its unfinished hosts count as failed. "
                   "Default: 60 plus 3 × hosts × size ÷ rate.")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Start of the testbed's namespace names.")
@click.option("--keep-copies", is_flag=True,
              help="Keep every host's copy after its run; by default only the logs stay.")
@click.option("--report-only", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Redraw the table and plots from this results.json into --output-dir, and run nothing; "
                   "repeat to merge the runs of several files.")
def main(hosts_text, size_text, rate_text, methods_text, work_dir, output_dir, run_timeout, prefix,
         keep_copies, report_only) -> None:
    """Measure how fast every host gets one blob with p2p-fetch, p2p-mirror, direct HTTP and plain BitTorrent."""
    if report_only:
        settings, results = load_results(report_only)
        write_outputs(output_dir, settings, results)
        click.echo((output_dir / "table.md").read_text())
        return

    host_counts = _parse_hosts(hosts_text)
    methods = _parse_methods(methods_text)
    try:
        size = parse_size(size_text, "--size")
        rate = parse_rate(rate_text, "--rate")
    except InvalidValue as error:
        raise click.UsageError(str(error)) from None
    if size <= 0 or rate <= 0:
        raise click.UsageError(f"--size and --rate must be positive, got {size_text!r} and {rate_text!r}")

    settings = {
        "command": " ".join(["python -m benchmarks.swarm", *sys.argv[1:]]),
        "size": size,
        "rate": rate,
        "hosts": host_counts,
        "methods": methods,
        "machine": _machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    raise_on_sigterm()
    results: list[RunResult] = []
    try:
        with Testbed(max(host_counts), rate, prefix) as testbed:
            shutil.rmtree(work_dir, ignore_errors=True)
            tracker_url = f"http://{testbed.services['tracker'].address}:6969"
            blob = make_blob(work_dir / "origin", size, tracker_url)
            click.echo(f"blob {blob.size} bytes, sha256 {blob.sha256}; S/B = {size / rate:.1f} s", err=True)

            for count in host_counts:
                timeout = run_timeout or 60 + 3 * count * size / rate
                for method in methods:
                    run_dir = work_dir / f"{method}-{count}"
                    started = time.monotonic()
                    try:
                        result = METHODS[method](testbed, testbed.clients[:count], blob, run_dir, timeout)
                    except Exception as error:  # one broken run must not lose the others
                        result = RunResult(LABELS[method], count, size, rate, [None] * count,
                                           errors=[f"run failed: {error}"])
                    results.append(result)
                    write_outputs(output_dir, settings, results)
                    click.echo(
                        f"{result.method} with {count} hosts: times {result.times}, "
                        f"errors {result.errors}, {time.monotonic() - started:.0f} s",
                        err=True,
                    )
                    if not keep_copies:
                        _remove_copies(run_dir)
    except NamespacesUnavailable as error:
        click.echo(f"swarm benchmark: {error}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except LeftoverNamespaces as error:
        click.echo(f"swarm benchmark: {error}", err=True)
        sys.exit(EXIT_LEFTOVERS)

    settings["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_outputs(output_dir, settings, results)
    click.echo((output_dir / "table.md").read_text())


if __name__ == "__main__":
    main()
