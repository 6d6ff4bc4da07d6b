"""The Kubernetes manifests: schema validation, probes, resources, and the mirror's config and scripts.

kubernetes-validate checks each document against the OpenAPI schemas that its
wheel ships, offline. The scripts of the mirror's ConfigMap run here for real,
on temporary folders in place of the node's.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import kubernetes_validate
import pytest

from core.host_config import load_host_config
from core.settings import load_settings
from mirrorproxy.settings import MirrorSettings
from seeder.settings import SeederSettings
from tests.image.manifests import DOCUMENTS, WORKLOADS, container, document_id, find
from tests.support.processes import VENV_BIN, free_port, running, wait_http_ok
from tracker.settings import TrackerSettings

ROOT = Path(__file__).resolve().parents[2]

# The oldest Kubernetes release the manifests are checked against, and the
# newest whose schemas the installed kubernetes-validate has.
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]

# Containers that run a p2p-fetch server, by the server's HTTP port.
SERVER_PORTS = {"tracker": 6969, "seeder": 7000, "mirror": 65001}


def env_values(item: dict, substitutions: dict[str, str]) -> dict[str, str]:
    """Return a container's literal env values, with $(NAME) references replaced from `substitutions`."""
    values = {}
    for variable in item.get("env", []):
        if "value" in variable:
            value = variable["value"]
            for name, replacement in substitutions.items():
                value = value.replace(f"$({name})", replacement)
            values[variable["name"]] = value
    return values


def mirror_config() -> dict:
    return find("ConfigMap", "p2p-mirror")["data"]


def write_script(name: str, tmp_path: Path) -> Path:
    """Write a script of the p2p-mirror-scripts ConfigMap to a file, as the pod mounts it."""
    path = tmp_path / name
    path.write_text(find("ConfigMap", "p2p-mirror-scripts")["data"][name])
    return path


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_manifest_validates(document, version):
    kubernetes_validate.validate(document, version, strict=True)


def test_validation_rejects_unknown_field():
    # A misspelled field must fail, or the validation above proves nothing.
    deployment = copy.deepcopy(find("Deployment", "p2p-tracker"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_manifests_cover_every_part():
    kinds = {document_id(document) for document in DOCUMENTS}

    assert "Deployment/p2p-tracker" in kinds
    assert "Service/p2p-tracker" in kinds
    assert "StatefulSet/p2p-seeder" in kinds
    assert "DaemonSet/p2p-mirror" in kinds
    assert "ConfigMap/p2p-mirror" in kinds
    assert all(document["metadata"].get("namespace") == "p2p-fetch" for document in DOCUMENTS
               if document["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"))


@pytest.mark.parametrize("workload", WORKLOADS, ids=document_id)
def test_servers_have_probes_and_resources(workload):
    pod = workload["spec"]["template"]["spec"]
    servers = [item for item in pod["containers"] if item["name"] in SERVER_PORTS]
    assert servers, "no p2p-fetch server in this workload"

    for item in pod.get("initContainers", []) + pod["containers"]:
        for kind in ("requests", "limits"):
            assert set(item["resources"][kind]) == {"cpu", "memory"}, f"{item['name']} {kind}"

    for item in servers:
        port = SERVER_PORTS[item["name"]]
        named_ports = {entry["name"]: entry["containerPort"] for entry in item["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            check = item[probe]["httpGet"]
            assert check["path"] == "/healthz", f"{item['name']} {probe}"
            assert named_ports.get(check["port"], check["port"]) == port, f"{item['name']} {probe}"


@pytest.mark.parametrize("workload", WORKLOADS, ids=document_id)
def test_prometheus_annotations_name_open_port(workload):
    template = workload["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    ports = [entry["containerPort"] for item in template["spec"]["containers"] for entry in item["ports"]]

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in ports


@pytest.mark.parametrize("workload", WORKLOADS, ids=document_id)
def test_workloads_run_as_non_root(workload):
    pod = workload["spec"]["template"]["spec"]
    for item in pod["containers"]:
        user = item.get("securityContext", {}).get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
        assert user == 10001, item["name"]


def test_images_match_project_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        item["image"]
        for workload in WORKLOADS
        for item in workload["spec"]["template"]["spec"].get("initContainers", []) + workload["spec"]["template"]["spec"]["containers"]
    }

    assert images == {f"registry.example/p2p-fetch:{version}"}


def test_mirror_daemonset_uses_host_network():
    daemonset = find("DaemonSet", "p2p-mirror")
    pod = daemonset["spec"]["template"]["spec"]
    mirror = container(daemonset, "mirror")

    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
    assert tomllib.loads(mirror_config()["mirror.toml"])["listen"] == "127.0.0.1:65001"
    for probe in ("livenessProbe", "readinessProbe"):
        assert mirror[probe]["httpGet"]["host"] == "127.0.0.1"


def test_mirror_config_loads_as_settings(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(mirror_config()["mirror.toml"])

    settings = load_settings(MirrorSettings, config, data_dir=tmp_path / "cache")

    assert settings.listen == "127.0.0.1:65001"
    assert settings.cache_quota == 50 * 1024**3
    assert settings.tracker == "http://p2p-tracker.p2p-fetch.svc:6969"
    assert settings.default_registry == "docker.io"


@pytest.mark.parametrize("config_map", ["p2p-mirror", "p2p-seeder"])
def test_host_config_loads(config_map, tmp_path):
    path = tmp_path / "host.toml"
    path.write_text(find("ConfigMap", config_map)["data"]["host.toml"])

    limits, source = load_host_config(path)

    assert source == path
    assert limits.upload_limit == 0
    assert limits.connections_limit == 400


@pytest.mark.parametrize(
    ("kind", "name", "server"), [("DaemonSet", "p2p-mirror", "mirror"), ("StatefulSet", "p2p-seeder", "seeder")]
)
def test_server_reads_mounted_host_config(kind, name, server):
    # The file must come from the ConfigMap volume itself, since a subPath
    # mount would never see an edited ConfigMap.
    workload = find(kind, name)
    item = container(workload, server)
    args = item["args"]
    host_config = Path(args[args.index("--host-config") + 1])
    mounts = {mount["name"]: mount for mount in item["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in workload["spec"]["template"]["spec"]["volumes"]}

    assert Path(mounts["config"]["mountPath"]) == host_config.parent
    assert "subPath" not in mounts["config"]
    assert volumes["config"]["configMap"]["name"] == name
    assert host_config.name in find("ConfigMap", name)["data"]


def test_seeder_env_loads_as_settings(monkeypatch, tmp_path):
    seeder = container(find("StatefulSet", "p2p-seeder"), "seeder")
    for name, value in env_values(seeder, {"POD_IP": "10.1.2.3"}).items():
        monkeypatch.setenv(name, value)

    settings = load_settings(SeederSettings, None, listen="0.0.0.0:7000", data_dir=tmp_path)

    assert settings.api_url == "http://10.1.2.3:7000"
    assert settings.cache_quota == 90 * 1024**3
    assert settings.session_listen == "0.0.0.0:6881"


def test_tracker_env_loads_as_settings(monkeypatch, tmp_path):
    tracker = container(find("Deployment", "p2p-tracker"), "tracker")
    for name, value in env_values(tracker, {}).items():
        monkeypatch.setenv(name, value)

    settings = load_settings(TrackerSettings, None, listen="0.0.0.0:6969", data_dir=tmp_path)

    assert settings.announce_url == "http://p2p-tracker.p2p-fetch.svc:6969/announce"


# The init container's script.


def run_node_setup(tmp_path: Path, hosts_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config" / "mirror.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(mirror_config()["mirror.toml"])
    script = write_script("node-setup.py", tmp_path)
    environment = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
    return subprocess.run(
        [sys.executable, str(script), "--config", str(config),
         "--location-labels", mirror_config()["location-labels"],
         "--hosts-dir", str(hosts_dir), "--output", str(tmp_path / "run" / "mirror.toml"),
         "--cache-dir", str(tmp_path / "cache"), "--cache-owner", f"{os.getuid()}:{os.getgid()}"],
        capture_output=True, text=True, timeout=60, env={**environment, "NODE_NAME": "node-1", **(env or {})},
    )


def test_node_setup_writes_hosts_toml(tmp_path):
    hosts_dir = tmp_path / "certs.d"
    upstreams = tomllib.loads(mirror_config()["mirror.toml"])["upstreams"]

    result = run_node_setup(tmp_path, hosts_dir)

    assert result.returncode == 0, result.stderr
    for registry, upstream in upstreams.items():
        hosts = tomllib.loads((hosts_dir / registry / "hosts.toml").read_text())
        assert hosts["server"] == upstream
        assert hosts["host"] == {"http://127.0.0.1:65001": {"capabilities": ["pull", "resolve"]}}
    assert (tmp_path / "cache").is_dir()


def test_node_setup_keeps_admin_hosts_toml(tmp_path):
    hosts_dir = tmp_path / "certs.d"
    (hosts_dir / "quay.io").mkdir(parents=True)
    own = 'server = "https://quay.example"\n'
    (hosts_dir / "quay.io" / "hosts.toml").write_text(own)

    first = run_node_setup(tmp_path, hosts_dir)
    second = run_node_setup(tmp_path, hosts_dir)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (hosts_dir / "quay.io" / "hosts.toml").read_text() == own
    assert "left alone" in second.stderr
    # Its own files it rewrites, so a second run changes nothing else.
    assert tomllib.loads((hosts_dir / "docker.io" / "hosts.toml").read_text())["server"] == "https://registry-1.docker.io"


def test_node_setup_without_api_leaves_location_empty(tmp_path):
    result = run_node_setup(tmp_path, tmp_path / "certs.d")

    assert result.returncode == 0, result.stderr
    assert "location is left empty" in result.stderr
    assert (tmp_path / "run" / "mirror.toml").read_text() == mirror_config()["mirror.toml"]


def test_node_setup_rejects_broken_config(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("listen = \n")
    script = write_script("node-setup.py", tmp_path)

    result = subprocess.run(
        [sys.executable, str(script), "--config", str(config), "--hosts-dir", str(tmp_path / "certs.d"),
         "--output", str(tmp_path / "out.toml"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 1
    assert "fix the p2p-mirror ConfigMap" in result.stderr
    assert "Traceback" not in result.stderr


def test_location_prepended_before_tables(tmp_path):
    script = write_script("node-setup.py", tmp_path)
    spec = importlib.util.spec_from_file_location("node_setup", script)
    node_setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node_setup)
    labels = {"topology.kubernetes.io/region": "dc1", "topology.kubernetes.io/zone": "dc1-a", "other": "x"}
    keys = mirror_config()["location-labels"].split(",")
    source = tmp_path / "mirror.toml"
    source.write_text(mirror_config()["mirror.toml"])

    location = node_setup.location_of(labels, keys)
    node_setup.write_settings(source, tmp_path / "out.toml", location)
    settings = load_settings(MirrorSettings, tmp_path / "out.toml", data_dir=tmp_path / "cache")

    assert location == "dc1/dc1-a"
    assert node_setup.location_of({"topology.kubernetes.io/zone": "z"}, keys) == "z"
    assert settings.location == "dc1/dc1-a"
    assert settings.default_registry == "docker.io"


# The metrics relay beside the mirror.


def test_metrics_relay_passes_metrics_only(tmp_path):
    mirror_port, relay_port = free_port(), free_port()
    mirror_url = f"http://127.0.0.1:{mirror_port}"
    relay_url = f"http://127.0.0.1:{relay_port}"
    script = write_script("metrics-relay.py", tmp_path)
    mirror = [str(VENV_BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{mirror_port}", "--tracker", "",
              "--data-dir", str(tmp_path / "cache"), "--bittorrent-listen", "127.0.0.1:0"]
    relay = [sys.executable, str(script), "--listen", f"127.0.0.1:{relay_port}", "--mirror", mirror_url]

    with running(relay, log_path=tmp_path / "relay.log"):
        with running(mirror, ready_url=f"{mirror_url}/healthz", log_path=tmp_path / "mirror.log"):
            wait_http_ok(f"{relay_url}/healthz")
            metrics = httpx.get(f"{relay_url}/metrics", timeout=5)
            registry = httpx.get(f"{relay_url}/v2/", timeout=5)
        after_stop = httpx.get(f"{relay_url}/metrics", timeout=5)

    assert metrics.status_code == 200
    assert "p2p_mirror_" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert registry.status_code == 404
    assert after_stop.status_code == 502
    assert mirror_url in after_stop.text
