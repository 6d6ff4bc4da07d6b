"""The host's rate and connection limits in a running mirror, reloaded on SIGHUP or through the admin API."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from core.host_config import HostConfig, load_host_config
from mirrorproxy.metrics import MirrorMetrics
from swarm import Session, TaskHandle

log = logging.getLogger(__name__)


class HostLimits:
    """The host configuration in force, applied to the session and to every task in it.

    A task may ask for limits of its own (`p2p-fetch --download-limit`); they
    only lower the host's per-task limits, and a reload keeps them.
    """

    def __init__(self, config: HostConfig, path: Path | None, metrics: MirrorMetrics):
        self._config = config
        self._path = path
        self._metrics = metrics
        self._session: Session | None = None
        self._requested: dict[str, tuple[int, int]] = {}  # info hash -> the (upload, download) limits it requested
        self._lock = threading.Lock()
        self._export(config)

    @property
    def config(self) -> HostConfig:
        return self._config

    @property
    def path(self) -> Path | None:
        """The file the configuration came from; None when no file was found and every limit is off."""
        return self._path

    def attach(self, session: Session) -> None:
        """Export the session's current rates as metrics; call once the session runs."""
        self._session = session
        self._metrics.transfer_rate.labels("upload").set_function(lambda: self._current_rate("upload"))
        self._metrics.transfer_rate.labels("download").set_function(lambda: self._current_rate("download"))

    def add_task(
        self, metainfo: bytes, save_path: Path, *, upload: int = 0, download: int = 0, seed_mode: bool = False
    ) -> TaskHandle:
        """Add a task to the session under the host's per-task limits, lowered by `upload` and `download`."""
        if self._session is None:
            raise RuntimeError("HostLimits.add_task called before attach(session)")
        with self._lock:
            task_upload, task_download = self._config.task_limits(upload, download)
            task = self._session.add_task(
                metainfo, save_path, seed_mode=seed_mode, upload_limit=task_upload, download_limit=task_download
            )
            if upload or download:
                self._requested[task.info_hash] = (upload, download)
        return task

    def reload(self) -> HostConfig:
        """Read the host configuration again and apply it to the session and every running task.

        Raises HostConfigError when the file is invalid; the limits in force
        stay as they were.
        """
        config, path = load_host_config(self._path)
        self._path = path
        self.apply(config)
        return config

    def apply(self, config: HostConfig) -> None:
        """Put `config` in force without restarting any download."""
        with self._lock:
            previous = self._config
            self._config = config
            if self._session is not None:
                self._session.set_limits(config.upload_limit, config.download_limit)
                self._apply_task_limits(config)
        self._export(config)

        log.info("host limits applied", extra={"path": str(self._path) if self._path else None, **config.model_dump()})
        if (config.connections_limit, config.task_connections_limit) != (
            previous.connections_limit,
            previous.task_connections_limit,
        ):
            # NOTE: swarm.Session changes rates at run time but not connection
            # limits; those are read when the session starts.
            log.warning(
                "connection limits changed; they take effect when p2p-mirror restarts",
                extra={
                    "connections_limit": config.connections_limit,
                    "task_connections_limit": config.task_connections_limit,
                },
            )

    def _apply_task_limits(self, config: HostConfig) -> None:
        running = {task.info_hash: task for task in self._session.tasks()}
        for info_hash in list(self._requested):
            if info_hash not in running:
                del self._requested[info_hash]
        for info_hash, task in running.items():
            upload, download = self._requested.get(info_hash, (0, 0))
            task.set_limits(*config.task_limits(upload, download))

    def _export(self, config: HostConfig) -> None:
        limits = self._metrics.rate_limit
        limits.labels("upload", "host").set(config.upload_limit)
        limits.labels("download", "host").set(config.download_limit)
        limits.labels("upload", "task").set(config.task_upload_limit)
        limits.labels("download", "task").set(config.task_download_limit)
        self._metrics.connections_limit.labels("host").set(config.connections_limit)
        self._metrics.connections_limit.labels("task").set(config.task_connections_limit)

    def _current_rate(self, direction: str) -> float:
        session = self._session
        if session is None:
            return 0.0
        total = 0
        for task in session.tasks():
            try:
                progress = task.progress()
            except RuntimeError:
                # The task was removed between the listing and the status call.
                continue
            total += progress.upload_rate if direction == "upload" else progress.download_rate
        return float(total)
