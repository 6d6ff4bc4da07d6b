"""Invalid limits in the host configuration and on the command line stop each process at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.host_config import PATH_VARIABLE, HostConfig, HostConfigError, load_host_config
from tests.support.processes import VENV_BIN, free_port

EXIT_INVALID = 2

# Each process is started with only the host configuration wrong; the rest
# would let it start on free loopback ports.
UNREACHABLE_TRACKER = "http://127.0.0.1:9"


def run(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **(env or {})}
    )


def commands(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "p2p-mirror": [
            str(VENV_BIN / "p2p-mirror"), "--listen", f"127.0.0.1:{free_port()}", "--tracker", UNREACHABLE_TRACKER,
            "--data-dir", str(tmp_path / "mirror"), "--bittorrent-listen", "127.0.0.1:0",
        ],
        "p2p-seeder": [
            str(VENV_BIN / "p2p-seeder"), "--listen", f"127.0.0.1:{free_port()}", "--tracker", UNREACHABLE_TRACKER,
            "--data-dir", str(tmp_path / "seeder"),
        ],
        "p2p-fetch": [
            str(VENV_BIN / "p2p-fetch"), "http://127.0.0.1:9/blob", "-o", str(tmp_path / "out"),
            "--tracker", UNREACHABLE_TRACKER, "--no-mirror", "--listen", "127.0.0.1:0",
        ],
    }


BAD_FILES = [
    ('download_limit = "50 furlongs"\n', ["download_limit", "'50 furlongs'", "unknown unit"]),
    ("task_upload_limit = -1\n", ["task_upload_limit", "-1", "must not be negative"]),
    ('upload_limit = "20Gbit/s"\n', ["upload_limit", "'20Gbit/s'", "at most"]),
    ("connections_limit = 1\n", ["connections_limit", "1", "greater than or equal to 2"]),
    ('upload_limt = "5MiB/s"\n', ["unknown key 'upload_limt'", "upload_limit"]),
    ("upload_limit = \n", ["not valid TOML"]),
]


@pytest.mark.parametrize("process", ["p2p-mirror", "p2p-seeder", "p2p-fetch"])
@pytest.mark.parametrize("content,expected", BAD_FILES, ids=["unit", "negative", "too-large", "connections", "typo", "toml"])
def test_bad_host_config_stops_process(tmp_path: Path, process: str, content: str, expected: list[str]):
    config = tmp_path / "host.toml"
    config.write_text(content)

    result = run([*commands(tmp_path)[process], "--host-config", str(config)], tmp_path)

    assert result.returncode == EXIT_INVALID, result.stderr
    assert str(config) in result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("process", ["p2p-mirror", "p2p-seeder", "p2p-fetch"])
def test_host_config_from_environment(tmp_path: Path, process: str):
    config = tmp_path / "env-host.toml"
    config.write_text('task_download_limit = "3 MB per s"\n')

    result = run(commands(tmp_path)[process], tmp_path, env={PATH_VARIABLE: str(config)})

    assert result.returncode == EXIT_INVALID, result.stderr
    assert "task_download_limit '3 MB per s'" in result.stderr


@pytest.mark.parametrize("process", ["p2p-mirror", "p2p-seeder", "p2p-fetch"])
def test_missing_host_config_named(tmp_path: Path, process: str):
    missing = tmp_path / "nowhere.toml"

    result = run([*commands(tmp_path)[process], "--host-config", str(missing)], tmp_path)

    assert result.returncode == EXIT_INVALID, result.stderr
    assert f"host configuration {str(missing)!r} not found" in result.stderr


@pytest.mark.parametrize(
    "option,value,expected",
    [
        ("--download-limit", "fast", "invalid --download-limit 'fast'"),
        ("--upload-limit", "-5MiB/s", "invalid --upload-limit '-5MiB/s'"),
        ("--download-limit", "3 parsecs/s", "unknown unit 'parsecs'"),
        ("--upload-limit", "100Gbit/s", "at most 2147483647 bytes/s"),
    ],
)
def test_bad_fetch_limit_option_rejected(tmp_path: Path, option: str, value: str, expected: str):
    result = run([*commands(tmp_path)["p2p-fetch"], option, value], tmp_path)

    assert result.returncode == EXIT_INVALID, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_mirror_rejects_moved_limit_setting(tmp_path: Path):
    settings = tmp_path / "mirror.toml"
    settings.write_text('download_limit = "10MiB/s"\n')

    result = run([*commands(tmp_path)["p2p-mirror"], "--config", str(settings)], tmp_path)

    assert result.returncode == EXIT_INVALID, result.stderr
    assert "download_limit is a setting of the host configuration now" in result.stderr


def test_host_config_units(tmp_path: Path):
    config = tmp_path / "host.toml"
    config.write_text(
        'upload_limit = "50MiB/s"\n'
        'download_limit = "100Mbit/s"\n'
        "task_upload_limit = 4000000\n"
        'task_download_limit = "0"\n'
        "connections_limit = 300\n"
        "task_connections_limit = 40\n"
    )

    loaded, path = load_host_config(config)

    assert path == config
    assert loaded == HostConfig(
        upload_limit=50 * 1024 * 1024,
        download_limit=12_500_000,
        task_upload_limit=4_000_000,
        task_download_limit=0,
        connections_limit=300,
        task_connections_limit=40,
    )


def test_no_host_config_means_no_limits(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(PATH_VARIABLE, raising=False)
    monkeypatch.setattr("core.host_config.DEFAULT_PATH", tmp_path / "absent.toml")

    loaded, path = load_host_config()

    assert path is None
    assert loaded == HostConfig()
    assert loaded.session_limits()["download_limit"] == 0


def test_reading_a_directory_is_an_error(tmp_path: Path):
    with pytest.raises(HostConfigError, match="cannot read host configuration"):
        load_host_config(tmp_path)
