"""The thread that pumps libtorrent alerts and dispatches them by type."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import libtorrent as lt

log = logging.getLogger(__name__)

AlertHandler = Callable[[lt.alert], None]

# How long one wait for alerts blocks, in milliseconds; it bounds how quickly
# the pump notices a stop request.
_WAIT_MILLISECONDS = 250


class AlertPump:
    """Pop alerts from a session in one thread and call the handler registered for each type.

    Handlers run on the pump thread, so they must be quick and must not call
    blocking libtorrent functions.
    """

    def __init__(self, session: lt.session, handlers: dict[type, AlertHandler], tick: Callable[[], None]):
        self._session = session
        self._handlers = handlers
        self._tick = tick
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="libtorrent-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._session.wait_for_alert(_WAIT_MILLISECONDS)
            for alert in self._session.pop_alerts():
                handler = self._handlers.get(type(alert))
                if handler is None:
                    continue
                try:
                    handler(alert)
                except Exception:
                    # One bad handler must not stop the pump that every task depends on.
                    log.exception("alert handler failed", extra={"alert": type(alert).__name__})
            try:
                self._tick()
            except Exception:
                log.exception("periodic swarm bookkeeping failed")
