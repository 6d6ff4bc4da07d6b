"""The client side of the tracker's task API, used by `p2p-fetch`."""

from __future__ import annotations

import time

import httpx

from core.tasks import API_PREFIX, Task, TaskRequest, TaskState


class TrackerUnavailable(Exception):
    """The tracker could not be reached or returned an error status."""


class TaskTimeout(TimeoutError):
    """The task was not ready before the deadline."""


class TaskClient:
    """Create tasks on a tracker, wait for them, and download their metainfo."""

    def __init__(self, tracker_url: str, token: str | None = None, timeout: float = 30.0):
        self.tracker_url = tracker_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.tracker_url + API_PREFIX, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise TrackerUnavailable(
                f"tracker {self.tracker_url} unreachable ({error.__class__.__name__}: {error}); "
                "check --tracker and that p2p-tracker runs"
            ) from None
        if response.status_code >= 400:
            detail = response.text[:300]
            raise TrackerUnavailable(
                f"tracker {self.tracker_url} returned {response.status_code} for {method} {path}: {detail}"
            )
        return response

    def wait_ready(self, request: TaskRequest, timeout: float) -> Task:
        """Create (or join) the task of `request` and wait until it is ready or failed."""
        deadline = time.monotonic() + timeout
        wait = max(1, min(20, int(timeout)))
        response = self._call(
            "POST", "/tasks", params={"wait": wait}, json=request.model_dump(), timeout=wait + 30
        )
        task = Task.model_validate(response.json())

        # Long polls of at most 20 s each, bounded by the caller's deadline.
        while task.state in (TaskState.PENDING, TaskState.INGESTING):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeout(f"task {task.id} still {task.state} after {timeout:.0f} s")
            wait = max(1, min(20, int(remaining)))
            response = self._call("GET", f"/tasks/{task.id}", params={"wait": wait}, timeout=wait + 30)
            task = Task.model_validate(response.json())
        return task

    def metainfo(self, task: Task) -> bytes:
        return self._call("GET", f"/tasks/{task.id}/metainfo").content
