"""Turn the benchmark's run results into summary figures, a markdown table and PNG plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.methods import RunResult

MiB = 1024 * 1024


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile of `values`, interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass
class Summary:
    """The figures of one run that the table shows."""

    method: str
    hosts: int
    completed: int
    p50: float | None
    p95: float | None
    max: float | None
    max_over_ideal: float | None  # slowest host ÷ (S/B), the time a link of rate B needs for S bytes
    origin_copies: float | None  # body bytes the origin sent ÷ S
    origin_link_copies: float  # bytes out of the origin's link ÷ S, headers included
    seeder_link_copies: float | None
    rate_fraction: float | None  # mean over hosts of (S ÷ completion time) ÷ B
    cpu_seconds: float


def summarize(result: RunResult) -> Summary:
    times = [time for time in result.times if time is not None]
    ideal = result.size / result.rate
    size = result.size
    done = bool(times) and len(times) == result.hosts
    return Summary(
        method=result.method,
        hosts=result.hosts,
        completed=len(times),
        p50=percentile(times, 0.5) if times else None,
        p95=percentile(times, 0.95) if times else None,
        # The slowest host is only known when every host finished.
        max=max(times) if done else None,
        max_over_ideal=max(times) / ideal if done else None,
        origin_copies=result.origin_bytes / size if result.origin_bytes is not None else None,
        origin_link_copies=result.origin_link_bytes / size,
        seeder_link_copies=result.seeder_link_bytes / size if result.seeder_link_bytes is not None else None,
        rate_fraction=sum(size / time for time in times) / len(times) / result.rate if times else None,
        cpu_seconds=sum(result.cpu_seconds.values()),
    )


def _figure(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[RunResult]) -> str:
    """Return a markdown table with one row per run."""
    lines = [
        "| method | hosts | done | p50 s | p95 s | max s | max ÷ (S/B) | origin copies | seeder copies "
        "| mean rate ÷ B | CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        summary = summarize(result)
        lines.append(
            f"| {summary.method} | {summary.hosts} | {summary.completed}/{summary.hosts} "
            f"| {_figure(summary.p50)} | {_figure(summary.p95)} | {_figure(summary.max)} "
            f"| {_figure(summary.max_over_ideal, 2)} | {_figure(summary.origin_copies, 2)} "
            f"| {_figure(summary.seeder_link_copies, 2)} | {_figure(summary.rate_fraction, 2)} "
            f"| {summary.cpu_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_completion_vs_hosts(results: Sequence[RunResult], path: Path) -> None:
    """Plot the slowest and median host's completion time against the number of hosts, one line per method."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    methods = sorted({result.method for result in results})
    for method in methods:
        runs = sorted((result for result in results if result.method == method), key=lambda result: result.hosts)
        summaries = [summarize(result) for result in runs]
        points = [(summary.hosts, summary.max) for summary in summaries if summary.max is not None]
        if not points:
            continue
        line, = axes.plot(*zip(*points), marker="o", label=f"{method}, slowest host")
        medians = [(summary.hosts, summary.p50) for summary in summaries if summary.p50 is not None]
        axes.plot(*zip(*medians), marker=".", linestyle=":", color=line.get_color(), label=f"{method}, median")

    ideal = results[0].size / results[0].rate
    axes.axhline(ideal, color="grey", linewidth=0.8, linestyle="--")
    axes.axhline(2 * ideal, color="grey", linewidth=0.8, linestyle="--")
    # x in axes coordinates (right edge), y in seconds.
    axes.text(0.99, ideal, "S/B", ha="right", va="bottom", color="grey", transform=axes.get_yaxis_transform())
    axes.text(0.99, 2 * ideal, "2·S/B", ha="right", va="bottom", color="grey", transform=axes.get_yaxis_transform())
    # Log scales, because direct HTTP grows with the hosts while the swarms stay near the limit.
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(sorted({result.hosts for result in results}))
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    _plain_log_ticks(matplotlib, axes.get_yaxis())
    axes.set_xlabel("hosts fetching at once")
    axes.set_ylabel("completion time, s (log scale)")
    axes.set_title(_title(results[0]))
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_completion_cdf(results: Sequence[RunResult], path: Path) -> None:
    """Plot, for the largest number of hosts, the fraction of hosts done against time, one step line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max(result.hosts for result in results)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for result in sorted((r for r in results if r.hosts == largest), key=lambda r: r.method):
        times = sorted(time for time in result.times if time is not None)
        if not times:
            continue
        fractions = [(index + 1) / result.hosts for index in range(len(times))]
        axes.step([times[0], *times], [0.0, *fractions], where="post", label=result.method)

    ideal = results[0].size / results[0].rate
    for multiple, label, height in ((1, "S/B", 0.02), (2, "2·S/B", 0.08)):
        axes.axvline(multiple * ideal, color="grey", linewidth=0.8, linestyle="--")
        axes.text(multiple * ideal, height, f" {label}", color="grey")
    axes.set_xscale("log")
    _plain_log_ticks(matplotlib, axes.get_xaxis())
    axes.set_xlabel("seconds from the common start (log scale)")
    axes.set_ylabel("fraction of hosts with the complete blob")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{largest} hosts, {_title(results[0])}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plain_log_ticks(matplotlib, axis) -> None:
    """Label a log axis at 1, 2 and 5 times each power of ten, as plain numbers."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _title(result: RunResult) -> str:
    return f"{result.size / MiB:g} MiB blob, {result.rate * 8 / 1e6:g} Mbit/s links"


def plot_swarm_throughput(results: Sequence[RunResult], path: Path) -> bool:
    """Plot, for the largest number of hosts, the client hosts' summed receive rate ÷ (hosts × B) over time.

    Uses the runs' timelines (bridge counters sampled once a second); returns
    False and draws nothing when no run of that size has one.
    """
    largest = max(result.hosts for result in results)
    runs = [result for result in results if result.hosts == largest and len(result.timeline) > 1]
    if not runs:
        return False

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for result in sorted(runs, key=lambda r: r.method):
        clients = sorted(role for role in result.timeline[0][1] if role.startswith("h"))[: result.hosts]
        seconds, fractions = [], []
        for (before, counts_before), (after, counts_after) in zip(result.timeline, result.timeline[1:]):
            received = sum(counts_after.get(role, 0) - counts_before.get(role, 0) for role in clients)
            seconds.append(after)
            fractions.append(received / (after - before) / (result.hosts * result.rate))
        axes.plot(seconds, fractions, label=result.method)

    axes.set_xlabel("seconds from the common start")
    axes.set_ylabel("client hosts' receive rate ÷ (hosts × B)")
    axes.set_ylim(0, 1.1)
    axes.set_title(f"{largest} hosts, {_title(runs[0])}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
