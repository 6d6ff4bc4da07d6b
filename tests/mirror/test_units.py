"""The mirror's pure parts: Range parsing, settings and the command line."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from cli.mirror import EXIT_INVALID_SETTINGS, EXIT_STARTUP_FAILED, main
from mirrorproxy.oci import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-199", ByteRange(100, 200)),
        ("bytes=900-", ByteRange(900, 1000)),
        ("bytes=900-5000", ByteRange(900, 1000)),
        ("bytes=-100", ByteRange(900, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        ("bytes=999-999", ByteRange(999, 1000)),
        # Ignored, so the whole blob is sent: other units, several ranges, garbage.
        ("items=0-9", None),
        ("bytes=0-9,20-29", None),
        ("bytes=abc-", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
        ("bytes", None),
    ],
)
def test_parse_range_cases(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_content_range_is_inclusive():
    assert ByteRange(100, 200).content_range(1000) == "bytes 100-199/1000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "no-equals-sign"], "expected REGISTRY=URL"),
        (["--upstream", "a=http://127.0.0.1:1", "--upstream", "a=http://127.0.0.1:2"], "given twice"),
        (["--upstream", "a=ftp://127.0.0.1:1"], "http:// or https://"),
        (["--upstream", "a=http://127.0.0.1:1", "--default-upstream", "b"], "not one of the upstreams"),
        (["--cache-quota", "lots"], "cache_quota"),
        (["--listen", "127.0.0.1"], "HOST:PORT"),
        (["--tracker", "tracker:6969"], "http:// or https://"),
        (["--log-level", "LOUD"], "log_level"),
    ],
)
def test_cli_rejects_invalid_settings(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_SETTINGS, result.output
    assert message in result.output


def test_cli_reports_busy_listen_address(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = CliRunner().invoke(
            main, ["--listen", f"127.0.0.1:{port}", "--tracker", "", "--data-dir", str(tmp_path)]
        )

    assert result.exit_code == EXIT_STARTUP_FAILED, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_cli_reads_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_MIRROR_CACHE_QUOTA", "-5")

    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_SETTINGS
    assert "cache_quota" in result.output
