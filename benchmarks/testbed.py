"""Hosts in network namespaces, joined by a bridge, each with a link shaped by tc.

For the prefix `pfb` and two hosts the testbed is:

    pfb-bridge    br0, with one veth end per host attached: origin, tracker, seeder, h01, h02
    pfb-origin    eth0 198.18.0.1/15        pfb-h01    eth0 198.18.1.1/15
    pfb-tracker   eth0 198.18.0.2/15        pfb-h02    eth0 198.18.1.2/15
    pfb-seeder    eth0 198.18.0.3/15

Each veth pair is shaped on both ends with a token bucket filter (tbf): the
host end limits what the host sends, the bridge end what it receives. The
addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for network
benchmarks. No namespace has a default route and the root namespace gets no
interface, so nothing inside can reach another network.

Run `python -m benchmarks.testbed --hosts 3 --rate 100Mbit/s` to build one and
look around until Ctrl-C; `python -m benchmarks.testbed --cleanup` removes the
namespaces a killed run left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
DEFAULT_PREFIX = "pfb"
NETWORK = "198.18.0.0/15"
PREFIX_LENGTH = 15
BRIDGE = "br0"
HOST_INTERFACE = "eth0"

# Hosts that serve the swarm, each on a link of its own, before the client hosts.
SERVICE_ROLES = ("origin", "tracker", "seeder")
MAX_HOSTS = 254

# Time a packet may wait in a tbf queue before it is dropped; bounds the queue
# the way a switch buffer does.
QUEUE_LATENCY = "50ms"

# From <sched.h>: setns() moves the calling thread into a network namespace.
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class TestbedError(RuntimeError):
    """A step of building or running the testbed failed."""


class NamespacesUnavailable(TestbedError):
    """This machine does not let us create network namespaces (not root, or forbidden)."""


class LeftoverNamespaces(TestbedError):
    """Namespaces with our prefix exist from an earlier run."""


@dataclass(frozen=True)
class Host:
    """One namespace of the testbed and its address on the bridge."""

    role: str
    namespace: str
    address: str

    def command(self, args: Sequence[str]) -> list[str]:
        """Return `args` prefixed to run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]


def _run(args: Sequence[str], timeout: float = 30) -> str:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TestbedError(f"{args[0]} not found: install iproute2") from None
    if result.returncode != 0:
        raise TestbedError(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def list_namespaces(prefix: str) -> list[str]:
    """Return the names of the network namespaces that start with `prefix-`."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(path.name for path in NETNS_DIR.iterdir() if path.name.startswith(f"{prefix}-"))


def cleanup_command(prefix: str) -> str:
    return f"python -m benchmarks.testbed --cleanup --prefix {prefix}"


def remove_leftovers(prefix: str) -> list[str]:
    """Stop the processes inside leftover namespaces by PID, then delete the namespaces; return their names."""
    names = list_namespaces(prefix)
    for name in names:
        for pid in _run(["ip", "netns", "pids", name]).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for name in names:
        _run(["ip", "netns", "delete", name])
    return names


def _tbf(rate: int) -> list[str]:
    """Return tc arguments of a token bucket filter at `rate` bytes per second."""
    # The bucket contains 10 ms of traffic (at least 64 KiB), enough for the
    # 64 KiB segments that veth hands over with GSO, small enough to keep the
    # rate within a few percent over any second.
    burst = max(64 * 1024, rate // 100)
    return ["tbf", "rate", f"{rate * 8}bit", "burst", str(burst), "latency", QUEUE_LATENCY]


def _setns(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(descriptor, _CLONE_NEWNET) != 0:
            raise TestbedError(f"setns into {path} failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(descriptor)


class Testbed:
    """Build the namespaces, links and shaping; start processes inside; tear it all down.

    Use it as a context manager: leaving the block, by an exception or
    KeyboardInterrupt included, stops every process it started and deletes
    every namespace it created.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, hosts: int, rate: int, prefix: str = DEFAULT_PREFIX):
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"invalid number of hosts {hosts}: expected 1 to {MAX_HOSTS}")
        if rate <= 0:
            raise ValueError(f"invalid link rate {rate} bytes/s: expected a positive rate")
        self.rate = rate
        self.prefix = prefix
        self.bridge_namespace = f"{prefix}-bridge"

        width = max(2, len(str(hosts)))
        self.services = {
            role: Host(role, f"{prefix}-{role}", f"198.18.0.{index}")
            for index, role in enumerate(SERVICE_ROLES, start=1)
        }
        self.clients = [
            Host(f"h{index:0{width}d}", f"{prefix}-h{index:0{width}d}", f"198.18.1.{index}")
            for index in range(1, hosts + 1)
        ]
        self._created: list[str] = []
        self._processes: list[subprocess.Popen] = []
        self._cpu_seconds: dict[int, float] = {}

    @property
    def hosts(self) -> list[Host]:
        return [*self.services.values(), *self.clients]

    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Building.

    def start(self) -> None:
        """Create the bridge namespace and every host with its shaped link."""
        self._check_allowed()
        leftovers = list_namespaces(self.prefix)
        if leftovers:
            raise LeftoverNamespaces(
                f"network namespaces from an earlier run still exist: {', '.join(leftovers)}; "
                f"remove them with `{cleanup_command(self.prefix)}`"
            )

        self._add_namespace(self.bridge_namespace)
        self._ip(self.bridge_namespace, "link", "add", BRIDGE, "type", "bridge")
        self._ip(self.bridge_namespace, "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._add_host(host)

    def _check_allowed(self) -> None:
        if os.geteuid() != 0:
            raise NamespacesUnavailable("network namespaces need root: run as root (or under sudo)")
        probe = f"{self.prefix}-probe"
        try:
            _run(["ip", "netns", "add", probe])
        except TestbedError as error:
            raise NamespacesUnavailable(f"this machine does not allow network namespaces: {error}") from None
        _run(["ip", "netns", "delete", probe])

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._created.append(name)
        self._ip(name, "link", "set", "lo", "up")

    def _add_host(self, host: Host) -> None:
        self._add_namespace(host.namespace)

        # Both ends are created where they live, so the root namespace never
        # contains an interface, not even for a moment.
        self._ip(
            self.bridge_namespace, "link", "add", host.role, "type", "veth",
            "peer", "name", HOST_INTERFACE, "netns", host.namespace,
        )
        self._ip(self.bridge_namespace, "link", "set", host.role, "master", BRIDGE, "up")
        self._ip(host.namespace, "addr", "add", f"{host.address}/{PREFIX_LENGTH}", "dev", HOST_INTERFACE)
        self._ip(host.namespace, "link", "set", HOST_INTERFACE, "up")

        _run(["tc", "-n", host.namespace, "qdisc", "add", "dev", HOST_INTERFACE, "root", *_tbf(self.rate)])
        _run(["tc", "-n", self.bridge_namespace, "qdisc", "add", "dev", host.role, "root", *_tbf(self.rate)])

    @staticmethod
    def _ip(namespace: str, *args: str) -> str:
        return _run(["ip", "-n", namespace, *args])

    # Inspection.

    def routes(self, host: Host) -> list[str]:
        """Return the host's IPv4 routes, one line each."""
        return [line for line in self._ip(host.namespace, "-4", "route", "show").splitlines() if line.strip()]

    def link_bytes(self, host: Host) -> tuple[int, int]:
        """Return (bytes sent, bytes received) on the host's link, headers included."""
        output = self._ip(host.namespace, "-s", "-j", "link", "show", "dev", HOST_INTERFACE)
        stats = json.loads(output)[0]["stats64"]
        return stats["tx"]["bytes"], stats["rx"]["bytes"]

    def all_link_bytes(self) -> dict[str, tuple[int, int]]:
        """Return (bytes sent, bytes received) of every host's link by role, read from the bridge in one call.

        The bridge end of a veth pair sends what the host receives, so the
        pair is swapped back to the host's point of view.
        """
        output = self._ip(self.bridge_namespace, "-s", "-j", "link", "show", "type", "veth")
        return {
            link["ifname"]: (link["stats64"]["rx"]["bytes"], link["stats64"]["tx"]["bytes"])
            for link in json.loads(output)
        }

    def call_in(self, host: Host, function: Callable[[], T]) -> T:
        """Run `function` in a thread that has joined the host's namespace, and return its result.

        Sockets the function opens belong to the host's network, so it can
        reach the testbed's addresses, which the root namespace cannot.
        """
        outcome: dict[str, object] = {}

        def target() -> None:
            try:
                _setns(NETNS_DIR / host.namespace)
                outcome["value"] = function()
            except BaseException as error:  # handed to the caller's thread below
                outcome["error"] = error

        # The thread ends with the call, so no other code runs in the namespace.
        thread = threading.Thread(target=target, name=f"in-{host.namespace}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]

    # Processes.

    def spawn(
        self,
        host: Host,
        args: Sequence[str],
        *,
        stdout: Path | None = None,
        stderr: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start `args` inside the host's namespace; stderr goes to `stdout` unless given apart.

        The process gets a session of its own so that Ctrl-C reaches only this
        program, which then stops it by PID.
        """
        out_file = open(stdout, "ab") if stdout else subprocess.DEVNULL
        if stderr:
            err_file = open(stderr, "ab")
        elif stdout:
            err_file = subprocess.STDOUT
        else:
            err_file = subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                host.command(args),
                stdout=out_file,
                stderr=err_file,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            for file in (out_file, err_file):
                if hasattr(file, "close"):
                    file.close()
        self._processes.append(process)
        return process

    def poll(self, process: subprocess.Popen) -> int | None:
        """Return the exit code if the process ended (reaping it and keeping its CPU time), else None."""
        if process.returncode is not None:
            return process.returncode
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == 0:
            return None
        process.returncode = os.waitstatus_to_exitcode(status)
        self._cpu_seconds[process.pid] = usage.ru_utime + usage.ru_stime
        return process.returncode

    def wait(self, process: subprocess.Popen, timeout: float) -> int:
        """Wait for the process to end; raise subprocess.TimeoutExpired after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.poll(process)) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(process.args, timeout)
            time.sleep(0.05)
        return code

    def stop(self, process: subprocess.Popen, timeout: float = 10) -> int:
        """Stop a process this testbed started, by PID: SIGTERM, then SIGKILL; stopping twice is safe."""
        if self.poll(process) is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return self.wait(process, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return self.wait(process, timeout)

    def cpu_seconds(self, process: subprocess.Popen) -> float:
        """Return the user plus system CPU time of an ended process (its threads included)."""
        if self.poll(process) is None:
            raise TestbedError(f"process {process.pid} is still running; stop it before reading its CPU time")
        return self._cpu_seconds.get(process.pid, 0.0)

    # Teardown.

    def close(self) -> None:
        """Stop every process started here and delete every namespace created here; safe to repeat."""
        # Ctrl-C during teardown would leave namespaces behind, so it waits.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _is_main_thread() else None
        try:
            for process in self._processes:
                try:
                    self.stop(process)
                except (OSError, subprocess.TimeoutExpired):
                    pass  # the namespace delete below still goes ahead
            errors = []
            for name in reversed(self._created):
                try:
                    _run(["ip", "netns", "delete", name])
                except TestbedError as error:
                    errors.append(str(error))
            self._created.clear()
            if errors:
                raise TestbedError(f"teardown incomplete ({'; '.join(errors)}); run `{cleanup_command(self.prefix)}`")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_sigterm() -> None:
    """Turn SIGTERM (from `timeout` or `kill`) into SystemExit, so that teardown runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


EXIT_UNAVAILABLE = 3
EXIT_LEFTOVERS = 4


def main(argv: Sequence[str] | None = None) -> None:
    """Build a testbed and keep it until Ctrl-C, or remove the leftovers of an earlier run."""
    import click

    from core.ids import InvalidValue
    from core.units import parse_rate

    @click.command()
    @click.option("--hosts", type=click.IntRange(1, MAX_HOSTS), default=3, show_default=True,
                  help="Number of client hosts, besides the origin, tracker and seeder hosts.")
    @click.option("--rate", default="100Mbit/s", show_default=True,
                  help="Rate of every link, each direction, e.g. 100Mbit/s or 50MiB/s.")
    @click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
                  help="Start of every namespace name, followed by a dash.")
    @click.option("--cleanup", is_flag=True,
                  help="Stop the processes in namespaces with the prefix and delete the namespaces, then exit.")
    def command(hosts: int, rate: str, prefix: str, cleanup: bool) -> None:
        if cleanup:
            removed = remove_leftovers(prefix)
            click.echo(f"removed {len(removed)} namespaces: {' '.join(removed) or '-'}")
            return
        try:
            rate_bytes = parse_rate(rate, "--rate")
        except InvalidValue as error:
            raise click.BadParameter(str(error), param_hint="--rate") from None

        raise_on_sigterm()
        try:
            with Testbed(hosts, rate_bytes, prefix) as testbed:
                for host in testbed.hosts:
                    click.echo(f"{host.namespace:16} {host.address}")
                click.echo(f"run commands with `ip netns exec NAME ...`; Ctrl-C removes the testbed")
                while True:
                    time.sleep(3600)
        except NamespacesUnavailable as error:
            click.echo(f"testbed: {error}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        except LeftoverNamespaces as error:
            click.echo(f"testbed: {error}", err=True)
            sys.exit(EXIT_LEFTOVERS)
        except KeyboardInterrupt:
            click.echo("testbed removed", err=True)

    command.main(args=argv, prog_name="python -m benchmarks.testbed")


if __name__ == "__main__":
    main()
