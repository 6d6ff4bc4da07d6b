"""Structured logs: one line per event, a message and `key=value` fields.

Call sites pass their fields with `extra`, using the fixed keys of the project
(`task_id`, `info_hash`, `digest`, `peer`, `url`, `error`):

    log.info("ingest finished", extra={"task_id": task.id, "bytes": size})
"""

from __future__ import annotations

import logging
import sys

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    # uvicorn repeats its message with terminal colour codes under this key.
    "color_message",
}


class KeyValueFormatter(logging.Formatter):
    """Render a record as `time level logger message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={_quote(value)}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES
        ]
        if fields:
            line = f"{line} {' '.join(fields)}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def configure_logging(level: str = "INFO") -> None:
    """Send the project's logs to stderr in the key=value format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO, heartbeats included; its errors still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Keep uvicorn's own loggers on our handler instead of its default format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
