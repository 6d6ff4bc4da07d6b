"""The image as a user runs it: its default command, health check, user and the four commands."""

from __future__ import annotations

import hashlib
import json
import secrets

import httpx
import pytest

from tests.image.conftest import container_command, run_tool
from tests.image.manifests import container, find
from tests.support.origin import Origin
from tests.support.processes import running

pytestmark = pytest.mark.timeout(900)

TRACKER_URL = "http://127.0.0.1:6969"


def image_config(image: str) -> dict:
    output = run_tool(["buildah", "inspect", "--type", "image", image]).stdout
    return json.loads(output)["Docker"]["config"]


def test_default_command_serves_healthz(image, netns, new_container, tmp_path):
    config = image_config(image)
    container = new_container()

    # The image's own command and settings: the tracker on 0.0.0.0:6969 with
    # its database in the volume. The namespace is the test's own, so the
    # fixed port is free.
    tracker = container_command(netns, container, config["Cmd"])
    with running(tracker, ready_url=f"{TRACKER_URL}/healthz", ready_timeout=60, log_path=tmp_path / "tracker.log"):
        reply = httpx.get(f"{TRACKER_URL}/healthz", timeout=5)

        health = config["Healthcheck"]["Test"]
        assert health[0] == "CMD"
        healthy = run_tool(container_command(netns, new_container(), health[1:]), check=False)

    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"
    assert healthy.returncode == 0, healthy.stderr
    assert "task store loaded" in (tmp_path / "tracker.log").read_text()


def test_healthcheck_fails_without_server(image, netns, new_container):
    health = image_config(image)["Healthcheck"]["Test"]

    result = run_tool(container_command(netns, new_container(), health[1:]), check=False)

    assert result.returncode != 0
    assert "Connection refused" in result.stderr


def test_image_declares_ports_volume_user(image):
    config = image_config(image)

    assert set(config["ExposedPorts"]) == {"6969/tcp", "7000/tcp", "65001/tcp", "6881/tcp"}
    assert list(config["Volumes"]) == ["/var/lib/p2p-fetch"]
    assert config["User"] == "10001:10001"


def test_runs_as_non_root(image, netns, new_container):
    output = run_tool(container_command(netns, new_container(), ["id", "-u"])).stdout

    assert output.strip() == "10001"


@pytest.mark.parametrize("command", ["p2p-fetch", "p2p-tracker", "p2p-seeder", "p2p-mirror"])
def test_command_help_runs(command, image, netns, new_container):
    output = run_tool(container_command(netns, new_container(), [command, "--help"])).stdout

    assert output.startswith("Usage: ")
    assert command in output


def test_bad_setting_exits_with_message(image, netns, new_container):
    result = run_tool(
        container_command(netns, new_container(), ["p2p-mirror", "--cache-quota", "lots"]), check=False
    )

    assert result.returncode == 2
    assert "cache_quota" in result.stderr
    assert "Traceback" not in result.stderr


def test_fetch_through_image(image, netns, new_container, tmp_path):
    # A tracker with its seeder and a p2p-fetch, both from the image, move a
    # file from a local origin. This runs libtorrent's wheel on the base's Python.
    content = secrets.token_bytes(3 * 1024 * 1024 + 4321)
    (tmp_path / "origin").mkdir()
    (tmp_path / "origin" / "file.bin").write_bytes(content)
    digest = "sha256:" + hashlib.sha256(content).hexdigest()

    tracker = container_command(
        netns,
        new_container(),
        ["p2p-tracker", "--listen", "127.0.0.1:6969", "--data-dir", "/var/lib/p2p-fetch/tracker", "--embedded-seeder"],
    )
    with (
        Origin(tmp_path / "origin") as origin,
        running(tracker, ready_url=f"{TRACKER_URL}/healthz", ready_timeout=60, log_path=tmp_path / "tracker.log"),
    ):
        fetch = container_command(
            netns,
            new_container(),
            ["p2p-fetch", origin.url("/file.bin"), "--tracker", TRACKER_URL, "--no-mirror",
             "--digest", digest, "--timeout", "120", "--json", "-o", "/tmp/file.bin"],
        )
        result = run_tool(fetch, timeout=180, check=False)
        origin_bytes = origin.bytes_sent("/file.bin")

    assert result.returncode == 0, f"{result.stderr}\ntracker log:\n{(tmp_path / 'tracker.log').read_text()}"
    # Exit code 0 with --digest means the whole file matched the digest.
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["size"] == len(content)
    assert summary["output"] == "/tmp/file.bin"
    # The seeder's first request is the one-byte range bytes=0-0, which checks
    # whether the origin supports ranges. Then it fetches the file once.
    assert origin_bytes == len(content) + 1


def test_mirror_daemonset_runs_from_image(image, netns, new_container, tmp_path):
    # The DaemonSet's own commands and mounts, with folders of this test in
    # place of the node's and the ConfigMaps'. Kubernetes expands $(NAME)
    # references in args from the container's env, so the test does too.
    daemonset = find("DaemonSet", "p2p-mirror")
    pod = daemonset["spec"]["template"]["spec"]
    config_map = find("ConfigMap", "p2p-mirror")["data"]
    volumes = {name: tmp_path / name for name in ("config", "scripts", "containerd-hosts", "run", "cache", "tmp")}
    for folder in volumes.values():
        folder.mkdir()
        folder.chmod(0o777)
    # The kubelet mounts a ConfigMap as one file per key.
    for name, text in config_map.items():
        (volumes["config"] / name).write_text(text)
    for name, text in find("ConfigMap", "p2p-mirror-scripts")["data"].items():
        (volumes["scripts"] / name).write_text(text)

    def command_of(spec: dict, env: dict[str, str]) -> list[str]:
        words = spec.get("command", []) + spec.get("args", [])
        for name, value in env.items():
            words = [word.replace(f"$({name})", value) for word in words]
        return words

    def run_options(spec: dict) -> list[str]:
        user = spec["securityContext"]["runAsUser"]
        mounts = [f"--volume={volumes[mount['name']]}:{mount['mountPath']}" for mount in spec["volumeMounts"]]
        return [f"--user={user}:{user}", *mounts]

    def in_container(spec: dict, env: dict[str, str]) -> list[str]:
        return netns.command(
            ["buildah", "run", "--network", "host", *run_options(spec), *(f"--env={k}={v}" for k, v in env.items()),
             new_container(), "--", *command_of(spec, env)]
        )

    node_setup = pod["initContainers"][0]
    setup_env = {"NODE_NAME": "node-1", "LOCATION_LABELS": config_map["location-labels"]}
    setup = run_tool(in_container(node_setup, setup_env), check=False)

    assert setup.returncode == 0, setup.stderr
    assert (volumes["containerd-hosts"] / "docker.io" / "hosts.toml").is_file()
    assert (volumes["run"] / "mirror.toml").is_file()
    assert (volumes["cache"].stat().st_uid, volumes["cache"].stat().st_gid) == (10001, 10001)

    mirror = container(daemonset, "mirror")
    relay = container(daemonset, "metrics-relay")
    with (
        running(in_container(mirror, {"P2P_MIRROR_TRACKER_TOKEN": "test-token"}),
                ready_url="http://127.0.0.1:65001/healthz", ready_timeout=60, log_path=tmp_path / "mirror.log"),
        running(in_container(relay, {}), ready_url="http://127.0.0.1:65002/healthz", ready_timeout=60,
                log_path=tmp_path / "relay.log"),
    ):
        metrics = httpx.get("http://127.0.0.1:65002/metrics", timeout=5)
        host_config = httpx.get("http://127.0.0.1:65001/api/v1/admin/host-config", timeout=5)

    assert metrics.status_code == 200
    assert "p2p_mirror_" in metrics.text
    assert host_config.json()["path"] == "/etc/p2p-fetch/config/host.toml"
    assert host_config.json()["limits"]["connections_limit"] == 400
