"""The seeder's calls to the tracker's task API: heartbeats and the outcome of each ingest."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import httpx

from core.tasks import API_PREFIX, BITTORRENT_MEDIA_TYPE, SeederHeartbeat, TaskFailure

log = logging.getLogger(__name__)

# Attempts and first delay (doubling) for reporting an ingest's outcome,
# about 15 s in all, so a tracker restarting meanwhile still gets it.
REPORT_ATTEMPTS = 5
REPORT_FIRST_DELAY = 1.0


class TrackerError(Exception):
    """The tracker could not be reached or rejected a call; `retryable` is False for a 4xx."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class TrackerClient:
    """An HTTP client of one tracker, with its bearer token when it has one."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        # trust_env=False: the tracker is reached directly, never through an environment proxy.
        self._client = httpx.Client(headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def heartbeat(self, seeder_id: str, heartbeat: SeederHeartbeat) -> None:
        self._put(f"/seeders/{quote(seeder_id, safe='')}", json=heartbeat.model_dump())

    def put_metainfo(self, task_id: str, metainfo: bytes) -> None:
        self._report(
            task_id,
            f"/tasks/{quote(task_id, safe=':')}/metainfo",
            content=metainfo,
            headers={"Content-Type": BITTORRENT_MEDIA_TYPE},
        )

    def put_failure(self, task_id: str, error: str) -> None:
        self._report(
            task_id, f"/tasks/{quote(task_id, safe=':')}/failure", json=TaskFailure(error=error).model_dump()
        )

    def _report(self, task_id: str, path: str, **request) -> None:
        """PUT an ingest's outcome, retrying while the tracker is unreachable or returns 5xx."""
        delay = REPORT_FIRST_DELAY
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                self._put(path, **request)
                return
            except TrackerError as error:
                if attempt == REPORT_ATTEMPTS or not error.retryable:
                    raise
                log.warning(
                    "reporting to the tracker failed, retrying",
                    extra={"task_id": task_id, "error": str(error), "attempt": attempt},
                )
                time.sleep(delay)
                delay *= 2

    def _put(self, path: str, **request) -> None:
        url = self.base_url + API_PREFIX + path
        try:
            response = self._client.put(url, **request)
        except httpx.HTTPError as error:
            raise TrackerError(f"tracker {self.base_url} unreachable: {type(error).__name__}: {error}") from None
        if response.status_code >= 300:
            raise TrackerError(
                f"tracker returned {response.status_code} for PUT {path}: {response.text[:300]}",
                retryable=response.status_code >= 500,
            )
