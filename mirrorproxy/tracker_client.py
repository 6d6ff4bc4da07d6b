"""The mirror's side of the task API: ask the tracker for a task and wait until its metainfo is ready."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from core.tasks import API_PREFIX, Task, TaskRequest, TaskState
from mirrorproxy.metrics import BackToSourceReason

# Maximum seconds of one long poll (?wait=) against the tracker; a longer
# task_timeout is covered by several polls.
_MAX_WAIT_SECONDS = 30.0


class NoSwarm(Exception):
    """The swarm cannot deliver this blob, for `reason`, so the mirror fetches it from the upstream."""

    def __init__(self, reason: BackToSourceReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class TrackerClient:
    """Requests to one tracker's task API; every method raises NoSwarm when the swarm cannot be used."""

    def __init__(self, base_url: str, token: str | None, timeout: float):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self._timeout = timeout
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def ready_task(self, request: TaskRequest, timeout: float) -> Task:
        """Create or join the task of `request` and wait until it is ready, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        body = request.model_dump(mode="json", exclude_none=True)
        task = self._call("POST", f"{API_PREFIX}/tasks", self._wait(deadline), json=body)

        while True:
            if task.state == TaskState.READY:
                return task
            if task.state == TaskState.FAILED:
                raise NoSwarm(BackToSourceReason.TASK_FAILED, task.error or "the tracker gave no reason")
            if time.monotonic() >= deadline:
                raise NoSwarm(
                    BackToSourceReason.TASK_TIMEOUT,
                    f"task {task.id} still {task.state.value} after {timeout:.0f} s",
                )
            task = self._call("GET", f"{API_PREFIX}/tasks/{quote(task.id, safe=':')}", self._wait(deadline))

    def metainfo(self, task: Task) -> bytes:
        """Download the torrent of a ready task."""
        path = task.metainfo_url or f"{API_PREFIX}/tasks/{quote(task.id, safe=':')}/metainfo"
        try:
            response = self._client.get(path)
        except httpx.HTTPError as error:
            raise NoSwarm(BackToSourceReason.TRACKER_UNREACHABLE, f"{self.base_url}: {error!r}") from None
        if response.status_code != 200:
            raise NoSwarm(
                BackToSourceReason.TRACKER_ERROR,
                f"GET {path} answered {response.status_code}: {response.text[:200]}",
            )
        return response.content

    def _wait(self, deadline: float) -> float:
        return max(0.0, min(_MAX_WAIT_SECONDS, deadline - time.monotonic()))

    def _call(self, method: str, path: str, wait: float, json: dict | None = None) -> Task:
        try:
            # The long poll keeps the request open for `wait` seconds, so the
            # read timeout must outlast it.
            response = self._client.request(
                method,
                path,
                params={"wait": f"{wait:.1f}"},
                json=json,
                timeout=httpx.Timeout(self._timeout, read=self._timeout + wait),
            )
        except httpx.HTTPError as error:
            raise NoSwarm(BackToSourceReason.TRACKER_UNREACHABLE, f"{self.base_url}: {error!r}") from None
        if response.status_code >= 400:
            raise NoSwarm(
                BackToSourceReason.TRACKER_ERROR,
                f"{method} {path} answered {response.status_code}: {response.text[:200]}",
            )
        try:
            return Task.model_validate_json(response.content)
        except ValidationError as error:
            raise NoSwarm(
                BackToSourceReason.TRACKER_ERROR, f"{method} {path} returned an invalid task: {error}"
            ) from None
