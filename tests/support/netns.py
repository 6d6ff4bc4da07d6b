"""Network namespaces with loopback alone, for registry clients that fall back to real registries.

skopeo, containerd and dockerd retry a failing mirror against the upstream
named in the image reference (docker.io, the `server` of a hosts.toml). Run in
a namespace whose only interface is `lo`, such a fallback finds no route out.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/run/netns")

# From <sched.h>: setns() joins only the network namespace with this flag.
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceUnavailable(RuntimeError):
    """This machine does not let the test create or join a network namespace."""


def _setns(descriptor: int) -> None:
    if _libc.setns(descriptor, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise NamespaceUnavailable(f"setns failed: {os.strerror(error)}")


class NetworkNamespace:
    """A named network namespace with only `lo`, up; delete it when done."""

    def __init__(self, name: str):
        self.name = name
        self.path = NETNS_DIR / name

    def create(self) -> None:
        """Create the namespace and bring up its loopback; raise NamespaceUnavailable if not allowed."""
        for args in (["ip", "netns", "add", self.name], ["ip", "-n", self.name, "link", "set", "lo", "up"]):
            result = subprocess.run(args, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                self.delete()
                raise NamespaceUnavailable(f"{' '.join(args)} failed: {result.stderr.strip()}")

        # The namespace must have loopback and nothing else, or a client's
        # fallback to a real registry could find a route.
        links = subprocess.run(
            ["ip", "-n", self.name, "-o", "link", "show"], capture_output=True, text=True, timeout=30
        ).stdout
        names = [line.split(":")[1].strip() for line in links.splitlines() if line.strip()]
        if names != ["lo"]:
            self.delete()
            raise NamespaceUnavailable(f"namespace {self.name} has interfaces {names}, expected only lo")

    def delete(self) -> None:
        """Delete the namespace; deleting one that does not exist is not an error."""
        if self.path.exists():
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)

    def command(self, args: list[str]) -> list[str]:
        """Return `args` prefixed so that the command runs inside the namespace.

        nsenter, unlike `ip netns exec`, leaves /sys as it is, which keeps the
        cgroup mounts that `ctr run` and `docker run` need.
        """
        return ["nsenter", f"--net={self.path}", *args]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into the namespace for the block, then back.

        Sockets keep the namespace they were created in, and threads and child
        processes started inside the block inherit it.
        """
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(original)
        finally:
            os.close(target)
            os.close(original)
