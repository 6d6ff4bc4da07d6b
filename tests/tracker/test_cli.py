"""`p2p-tracker` settings and start-up, through the command and click's runner."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx
from click.testing import CliRunner

from cli.tracker import EXIT_INVALID_SETTINGS, EXIT_STARTUP_FAILED, main
from tests.support.processes import VENV_BIN, free_port, running
from tests.tracker.conftest import write_config
from tracker.settings import TrackerSettings, listen_warning


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_bad_setting_named(tmp_path: Path) -> None:
    code, output = run_cli("--listen", "127.0.0.1:99999", "--data-dir", str(tmp_path))

    assert code == EXIT_INVALID_SETTINGS
    assert "setting 'listen'" in output
    assert "expected a port from 1 to 65535, got '99999'" in output


def test_bad_environment_variable_named(tmp_path: Path) -> None:
    code, output = run_cli("--data-dir", str(tmp_path), env={"P2P_TRACKER_ANNOUNCE_INTERVAL": "often"})

    assert code == EXIT_INVALID_SETTINGS
    assert "setting 'announce_interval' (input 'often')" in output


def test_bad_config_file_value_named(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", max_numwant=0)

    code, output = run_cli("--data-dir", str(tmp_path), "--config", str(config))

    assert code == EXIT_INVALID_SETTINGS
    assert "setting 'max_numwant' (input 0)" in output


def test_unknown_setting_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path / "typo.toml", anounce_interval=5)

    code, output = run_cli("--data-dir", str(tmp_path), "--config", str(config))

    assert code == EXIT_INVALID_SETTINGS
    assert "setting 'anounce_interval'" in output


def test_missing_data_dir_named() -> None:
    code, output = run_cli("--listen", "127.0.0.1:6969")

    assert code == EXIT_INVALID_SETTINGS
    assert "setting 'data_dir'" in output
    assert "Field required" in output


def test_min_interval_above_interval_rejected(tmp_path: Path) -> None:
    code, output = run_cli("--data-dir", str(tmp_path), env={
        "P2P_TRACKER_ANNOUNCE_INTERVAL": "10", "P2P_TRACKER_MIN_ANNOUNCE_INTERVAL": "20",
    })

    assert code == EXIT_INVALID_SETTINGS
    assert "min_announce_interval (20) must not exceed announce_interval (10)" in output


def test_missing_config_file_named(tmp_path: Path) -> None:
    code, output = run_cli("--data-dir", str(tmp_path), "--config", str(tmp_path / "absent.toml"))

    assert code == EXIT_INVALID_SETTINGS
    assert "absent.toml' not found" in output


def test_busy_port_exit_code(tmp_path: Path) -> None:
    port = free_port()
    with running(
        [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "a")],
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ):
        second = subprocess.run(
            [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=30,
        )

    assert second.returncode == EXIT_STARTUP_FAILED
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
    assert "Traceback" not in second.stderr


def test_precedence_and_effective_settings_logged(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "tracker.toml", announce_interval=40, min_announce_interval=3, max_numwant=70,
                          listen="127.0.0.1:1")
    log_path = tmp_path / "tracker.log"
    args = [str(VENV_BIN / "p2p-tracker"), "--config", str(config), "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(tmp_path / "data")]
    environment = {"P2P_TRACKER_ANNOUNCE_INTERVAL": "45", "P2P_TRACKER_API_TOKEN": "hidden-value"}
    with running(args, ready_url=f"http://127.0.0.1:{port}/healthz", log_path=log_path, env=environment):
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    log = log_path.read_text()

    assert health.status_code == 200
    assert "effective settings" in log
    assert f"'listen': '127.0.0.1:{port}'" in log  # the command line beats the file
    assert "'announce_interval': 45" in log  # the environment beats the file
    assert "'max_numwant': 70" in log  # the file beats the default
    assert "'api_token': '***'" in log
    assert "hidden-value" not in log


def test_listen_warning_without_token(tmp_path: Path) -> None:
    exposed = TrackerSettings(listen="0.0.0.0:6969", data_dir=tmp_path)
    protected = TrackerSettings(listen="0.0.0.0:6969", data_dir=tmp_path, api_token="t")
    loopback = TrackerSettings(listen="[::1]:6969", data_dir=tmp_path)

    assert "has no bearer token" in (listen_warning(exposed) or "")
    assert listen_warning(protected) is None
    assert listen_warning(loopback) is None


def test_loopback_start_logs_no_warning(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "tracker.log"
    args = [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")]
    with running(args, ready_url=f"http://127.0.0.1:{port}/healthz", log_path=log_path):
        pass

    assert "has no bearer token" not in log_path.read_text()


def test_help_names_every_option() -> None:
    code, output = run_cli("--help")

    assert code == 0
    for option in ("--listen", "--data-dir", "--config", "--log-level"):
        assert option in output


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "tracker.log"
    args = [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")]
    with running(args, ready_url=f"http://127.0.0.1:{port}/healthz", log_path=log_path) as process:
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
    log = log_path.read_text()

    # uvicorn re-raises the signal after a clean shutdown, so -SIGTERM is clean too.
    assert code in (0, -signal.SIGTERM)
    assert "tracker stopped" in log
    assert "Traceback" not in log


def test_wildcard_listen_announces_host_name(tmp_path: Path) -> None:
    settings = TrackerSettings(listen="0.0.0.0:6969", data_dir=tmp_path)
    public = TrackerSettings(listen="0.0.0.0:6969", data_dir=tmp_path, public_url="http://tracker.dc1:6969/")

    assert settings.announce_url == f"http://{socket.gethostname()}:6969/announce"
    assert public.announce_url == "http://tracker.dc1:6969/announce"


def test_corrupt_database_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tasks.sqlite3").write_bytes(b"this is not an SQLite database, " * 100)

    result = subprocess.run(
        [str(VENV_BIN / "p2p-tracker"), "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30,
    )

    assert result.returncode == EXIT_STARTUP_FAILED
    assert "cannot open the task database" in result.stderr
    assert "file is not a database" in result.stderr
    assert "Traceback" not in result.stderr
