"""`p2p-seeder` settings: bad values stop it with a message that names the setting."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from cli.seeder import EXIT_INVALID_SETTINGS, EXIT_STARTUP_FAILED, main
from core.settings import load_settings
from seeder.settings import SeederSettings
from tests.support.processes import VENV_BIN


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--listen", "localhost"], "listen"),
        (["--listen", "127.0.0.1:99999"], "listen"),
        (["--tracker", "ftp://127.0.0.1/"], "tracker"),
    ],
)
def test_bad_option(args, setting, tmp_path):
    result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert f"setting {setting!r}" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("P2P_SEEDER_CACHE_QUOTA", "lots", "cache_quota"),
        ("P2P_SEEDER_PARALLEL_RANGES", "0", "parallel_ranges"),
        ("P2P_SEEDER_HEARTBEAT_INTERVAL", "-1", "heartbeat_interval"),
        ("P2P_SEEDER_BITTORRENT_LISTEN", "nowhere", "bittorrent_listen"),
        ("P2P_SEEDER_LOG_LEVEL", "loud", "log_level"),
    ],
)
def test_bad_environment_variable(variable, value, setting, tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path)], env={variable: value})

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert f"setting {setting!r}" in result.output
    assert repr(value) in result.output


def test_bad_config_file(tmp_path):
    config = tmp_path / "seeder.toml"
    config.write_text('cache_quota = "10GiB"\nunknown_setting = 1\n')

    result = CliRunner().invoke(main, ["--config", str(config), "--data-dir", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert "setting 'unknown_setting'" in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "absent.toml")])

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert "not found" in result.output


def test_wildcard_listen_needs_advertise_url(tmp_path):
    result = subprocess.run(
        [str(VENV_BIN / "p2p-seeder"), "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )

    assert result.returncode == EXIT_STARTUP_FAILED
    assert "setting 'advertise_url' is required" in result.stderr


def test_precedence_of_file_environment_and_options(tmp_path, monkeypatch):
    config = tmp_path / "seeder.toml"
    config.write_text('cache_quota = "1GiB"\nparallel_ranges = 2\nlisten = "127.0.0.1:7001"\n')
    monkeypatch.setenv("P2P_SEEDER_PARALLEL_RANGES", "8")
    monkeypatch.setenv("P2P_SEEDER_LISTEN", "127.0.0.1:7002")

    settings = load_settings(SeederSettings, config, listen="127.0.0.1:7003")

    assert settings.cache_quota == 1024**3
    assert settings.parallel_ranges == 8
    assert settings.listen == "127.0.0.1:7003"
    assert settings.api_url == "http://127.0.0.1:7003"
    assert settings.session_listen == "127.0.0.1:0"


def test_segment_size_too_small(tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path)], env={"P2P_SEEDER_SEGMENT_SIZE": "1KiB"})

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert "setting 'segment_size'" in result.output
    assert "greater than or equal to 65536" in result.output
