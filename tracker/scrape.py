"""The scrape endpoint (BEP 48): counts of several swarms in one request."""

from __future__ import annotations

import logging

from tracker import responses
from tracker.errors import ErrorLogLimiter, Rejected
from tracker.metrics import TrackerMetrics
from tracker.query import parse_values
from tracker.swarms import SwarmRegistry

log = logging.getLogger(__name__)


class ScrapeEndpoint:
    """Handle scrapes; info hashes the tracker does not serve are left out of `files`."""

    def __init__(self, registry: SwarmRegistry, max_info_hashes: int, metrics: TrackerMetrics) -> None:
        self.registry = registry
        self.max_info_hashes = max_info_hashes
        self.metrics = metrics
        self.error_log = ErrorLogLimiter()

    def handle(self, query: bytes, client_host: str | None) -> bytes:
        """Return the bencoded reply to one scrape, where every error becomes a `failure reason`."""
        try:
            reply = self._scrape(query)
        except Rejected as rejection:
            self.metrics.scrapes[rejection.cause] += 1
            log.debug("scrape rejected", extra={"peer": client_host, "error": str(rejection)})
            return responses.failure(str(rejection))
        except Exception:
            self.metrics.scrapes["error"] += 1
            suppressed = self.error_log.allow()
            if suppressed is not None:
                log.exception("scrape failed", extra={"peer": client_host, "suppressed": suppressed})
            return responses.failure("internal tracker error; the tracker logged the cause, retry later")
        self.metrics.scrapes["ok"] += 1
        return reply

    def _scrape(self, query: bytes) -> bytes:
        info_hashes = parse_values(query, b"info_hash", self.max_info_hashes)

        # BEP 48 lets a tracker list every swarm when no info_hash is given;
        # this one does not, because that reply grows with every task.
        if not info_hashes:
            raise Rejected("missing info_hash: scrape requires at least one info_hash")

        swarms = []
        for info_hash in info_hashes:
            if len(info_hash) != 20:
                raise Rejected(f"invalid info_hash: expected 20 bytes, got {len(info_hash)}")
            swarm = self.registry.get(info_hash)
            if swarm is not None and swarm not in swarms:
                swarms.append(swarm)
        return responses.scrape(swarms)
