"""Start the project's servers as real processes for a test, and stop them by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it returns 200, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args} exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as error:
            last_error = error
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s (last error: {last_error})")


@contextmanager
def running(
    args: list[str],
    *,
    ready_url: str | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
) -> Iterator[subprocess.Popen]:
    """Run `args` for the duration of the block; stop it with SIGTERM, then SIGKILL."""
    log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        args,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        if ready_url:
            wait_http_ok(ready_url, ready_timeout, process)
        yield process
    finally:
        stop(process)
        if log_path:
            log_file.close()


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this test started, by its PID; stopping twice is safe."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
