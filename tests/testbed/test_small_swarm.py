"""p2p-fetch on three hosts of a namespace testbed with 100 Mbit/s links: every copy correct, one copy from the origin."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from benchmarks.methods import make_blob, run_p2p_fetch
from benchmarks.testbed import LeftoverNamespaces, NamespacesUnavailable, Testbed, list_namespaces

MiB = 1024 * 1024
SIZE = 16 * MiB
RATE = 100_000_000 // 8  # 100 Mbit/s in bytes per second
PREFIX = "pft"  # apart from the benchmark's prefix, so both can run at once


@pytest.fixture
def testbed():
    try:
        with Testbed(hosts=3, rate=RATE, prefix=PREFIX) as built:
            yield built
    except NamespacesUnavailable as error:
        pytest.skip(f"network namespaces not available: {error}")
    except LeftoverNamespaces as error:
        pytest.skip(str(error))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_testbed_has_no_route_out(testbed: Testbed):
    for host in testbed.hosts:
        routes = [route.split() for route in testbed.routes(host)]
        assert [route[:3] for route in routes] == [["198.18.0.0/15", "dev", "eth0"]]


def test_testbed_leaves_root_namespace_alone(testbed: Testbed):
    # A veth end in the root namespace would show its peer's namespace here.
    root_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
    assert f"link-netns {PREFIX}-" not in root_links


@pytest.mark.slow
def test_three_hosts_get_one_origin_copy(testbed: Testbed, tmp_path: Path):
    tracker_url = f"http://{testbed.services['tracker'].address}:6969"
    blob = make_blob(tmp_path / "origin", SIZE, tracker_url)

    result = run_p2p_fetch(testbed, testbed.clients, blob, tmp_path / "run", timeout=90)

    assert result.errors == []
    for host in testbed.clients:
        assert sha256_file(tmp_path / "run" / host.role / "blob.bin") == blob.sha256
    assert result.origin_bytes is not None
    assert result.origin_bytes <= 1.01 * SIZE


def test_testbed_removed_after_error():
    try:
        with Testbed(hosts=1, rate=RATE, prefix=PREFIX):
            assert len(list_namespaces(PREFIX)) == 5
            raise KeyboardInterrupt
    except NamespacesUnavailable as error:
        pytest.skip(f"network namespaces not available: {error}")
    except KeyboardInterrupt:
        pass
    assert list_namespaces(PREFIX) == []


def test_testbed_rejects_leftovers():
    leftover = f"{PREFIX}-h01"
    try:
        subprocess.run(["ip", "netns", "add", leftover], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"network namespaces not available: {error}")
    try:
        with pytest.raises(LeftoverNamespaces, match="--cleanup --prefix pft"):
            Testbed(hosts=1, rate=RATE, prefix=PREFIX).start()
        assert list_namespaces(PREFIX) == [leftover]
    finally:
        subprocess.run(["ip", "netns", "delete", leftover], capture_output=True, timeout=30)
