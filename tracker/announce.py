"""The announce endpoint (BEP 3, with BEP 23 compact and BEP 7 IPv6 peers)."""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass

from tracker import responses
from tracker.errors import ErrorLogLimiter, RejectCause, Rejected
from tracker.metrics import TrackerMetrics
from tracker.query import integer, show, split_query, unescape
from tracker.selection import select_peers
from tracker.settings import TrackerSettings
from tracker.swarms import Peer, Swarm, SwarmRegistry

log = logging.getLogger(__name__)

DEFAULT_NUMWANT = 50

# The largest byte count a client may report (a signed 64-bit integer).
MAX_BYTE_COUNT = 2**63 - 1

EVENTS = {b"", b"started", b"completed", b"stopped", b"paused"}

# Parameters of BEP 3, BEP 7, BEP 23 and those that libtorrent and aria2 add.
# Every other parameter is a host label, stored with the peer.
PROTOCOL_PARAMETERS = frozenset(
    {
        b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded", b"left", b"event",
        b"compact", b"no_peer_id", b"numwant", b"ip", b"ipv4", b"ipv6", b"key", b"trackerid",
        b"corrupt", b"redundant", b"supportcrypto", b"requirecrypto", b"cryptoport", b"localip",
    }
)  # fmt: skip

MAX_LABELS = 16
MAX_LABEL_NAME = 64
MAX_LABEL_VALUE = 256


@dataclass(slots=True)
class AnnounceRequest:
    """The validated parameters of one announce."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: bytes
    numwant: int
    compact: bool
    no_peer_id: bool
    announced_ip: bytes | None
    labels: dict[str, str]
    location: tuple[str, ...]


def parse_announce(params: dict[bytes, bytes], max_numwant: int) -> AnnounceRequest:
    """Validate the parameters of an announce (values still percent-encoded).

    Raise Rejected naming the first bad parameter.
    """
    info_hash = unescape(_required(params, b"info_hash"))
    if len(info_hash) != 20:
        raise Rejected(f"invalid info_hash: expected 20 bytes, got {len(info_hash)}")

    peer_id = unescape(_required(params, b"peer_id"))
    if len(peer_id) != 20:
        raise Rejected(f"invalid peer_id: expected 20 bytes, got {len(peer_id)}")

    port = integer("port", unescape(_required(params, b"port")), 65535)
    if port == 0:
        raise Rejected("invalid port 0: expected a port from 1 to 65535")

    # `left` decides whether the peer is a seeder, so it is required;
    # the transfer totals are informational and default to 0.
    left = integer("left", unescape(_required(params, b"left")), MAX_BYTE_COUNT)
    uploaded = _optional_integer(params, b"uploaded", 0)
    downloaded = _optional_integer(params, b"downloaded", 0)

    event = unescape(params.get(b"event", b""))
    if event not in EVENTS:
        raise Rejected(f"invalid event {show(event)}: expected started, completed, stopped or none")

    numwant = min(_optional_integer(params, b"numwant", DEFAULT_NUMWANT), max_numwant)
    compact = _flag(params, b"compact", default=True)
    no_peer_id = _flag(params, b"no_peer_id", default=False)
    announced_ip = params.get(b"ip") or params.get(b"ipv4") or params.get(b"ipv6")
    if announced_ip is not None:
        announced_ip = unescape(announced_ip)

    labels = _labels(params) if len(params.keys() - PROTOCOL_PARAMETERS) else {}
    location = tuple(part for part in labels["location"].split("/") if part) if "location" in labels else ()

    return AnnounceRequest(
        info_hash, peer_id, port, uploaded, downloaded, left, event, numwant, compact,
        no_peer_id, announced_ip, labels, location,
    )  # fmt: skip


def pack_address(host: str) -> tuple[str, bytes, bool]:
    """Return the address text, its packed bytes and whether it is IPv6.

    An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket
    reports IPv4 clients) becomes the IPv4 address.
    """
    if ":" not in host:
        return host, socket.inet_pton(socket.AF_INET, host), False
    packed = socket.inet_pton(socket.AF_INET6, host)
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        ipv4 = packed[12:]
        return socket.inet_ntop(socket.AF_INET, ipv4), ipv4, False
    return socket.inet_ntop(socket.AF_INET6, packed), packed, True


class AnnounceEndpoint:
    """Handle announces: update the peer in its swarm and return other peers."""

    def __init__(
        self,
        registry: SwarmRegistry,
        settings: TrackerSettings,
        metrics: TrackerMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.interval = settings.announce_interval
        self.min_interval = settings.min_announce_interval
        self.max_numwant = settings.max_numwant
        self.trust_announced_ip = settings.trust_announced_ip
        self.rng = rng or random.Random()
        self.error_log = ErrorLogLimiter()

    def handle(self, query: bytes, client_host: str | None) -> bytes:
        """Return the bencoded reply to one announce, where every error becomes a `failure reason`."""
        try:
            reply = self._announce(query, client_host)
        except Rejected as rejection:
            self.metrics.announces[rejection.cause] += 1
            log.debug("announce rejected", extra={"peer": client_host, "error": str(rejection)})
            return responses.failure(str(rejection))
        except Exception:
            self.metrics.announces["error"] += 1
            suppressed = self.error_log.allow()
            if suppressed is not None:
                log.exception("announce failed", extra={"peer": client_host, "suppressed": suppressed})
            return responses.failure("internal tracker error; the tracker logged the cause, retry later")
        self.metrics.announces["ok"] += 1
        return reply

    def _announce(self, query: bytes, client_host: str | None) -> bytes:
        request = parse_announce(split_query(query), self.max_numwant)

        swarm = self.registry.get(request.info_hash)
        if swarm is None:
            raise Rejected(
                f"unregistered info_hash {request.info_hash.hex()}: this tracker serves only "
                "torrents created through its task API",
                RejectCause.UNREGISTERED,
            )

        if request.event == b"stopped":
            swarm.remove(request.peer_id)
            return self._reply(swarm, [], request)

        ip, compact_address, is_ipv6 = self._address(request, client_host)
        compact = compact_address + request.port.to_bytes(2, "big")
        peer = swarm.peers.get(request.peer_id)
        if peer is None:
            peer = Peer(request.peer_id, ip, request.port, compact, is_ipv6)
            peer.left = request.left
            peer.location = request.location
            swarm.add(peer)
        else:
            if peer.compact != compact:
                peer.ip, peer.port, peer.compact, peer.is_ipv6 = ip, request.port, compact, is_ipv6
            swarm.refile(peer, request.left, request.location)

        peer.uploaded = request.uploaded
        peer.downloaded = request.downloaded
        peer.labels = request.labels
        peer.last_seen = time.monotonic()

        # `downloaded` in scrape counts completions, once per peer.
        if request.event == b"completed" and not peer.counted_complete:
            peer.counted_complete = True
            swarm.downloaded += 1

        return self._reply(swarm, select_peers(swarm, peer, request.numwant, self.rng), request)

    def _reply(self, swarm: Swarm, peers: list[Peer], request: AnnounceRequest) -> bytes:
        if request.compact:
            return responses.compact_announce(swarm, self.interval, self.min_interval, peers)
        return responses.dictionary_announce(
            swarm, self.interval, self.min_interval, peers, request.no_peer_id
        )

    def _address(self, request: AnnounceRequest, client_host: str | None) -> tuple[str, bytes, bool]:
        if self.trust_announced_ip and request.announced_ip is not None:
            try:
                return pack_address(request.announced_ip.decode("ascii"))
            except (UnicodeDecodeError, OSError, ValueError):
                raise Rejected(
                    f"invalid ip {show(request.announced_ip)}: expected an IPv4 or IPv6 address"
                ) from None
        if client_host is None:
            raise Rejected("cannot determine the client address; announce over TCP/IP")
        try:
            return pack_address(client_host)
        except OSError:
            raise Rejected(f"invalid client address {client_host!r}") from None


def _required(params: dict[bytes, bytes], name: bytes) -> bytes:
    value = params.get(name)
    if value is None:
        raise Rejected(f"missing {name.decode()}: announce requires info_hash, peer_id, port and left")
    return value


def _optional_integer(params: dict[bytes, bytes], name: bytes, default: int) -> int:
    value = params.get(name)
    if not value:
        return default
    return integer(name.decode(), unescape(value), MAX_BYTE_COUNT)


def _flag(params: dict[bytes, bytes], name: bytes, default: bool) -> bool:
    value = params.get(name)
    if not value:
        return default
    value = unescape(value)
    if value not in (b"0", b"1"):
        raise Rejected(f"invalid {name.decode()} {show(value)}: expected 0 or 1")
    return value == b"1"


def _labels(params: dict[bytes, bytes]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for raw_name, escaped_value in params.items():
        if raw_name in PROTOCOL_PARAMETERS:
            continue
        raw_name = unescape(raw_name)
        value = unescape(escaped_value)
        if len(labels) == MAX_LABELS:
            raise Rejected(f"invalid labels: at most {MAX_LABELS} extra parameters allowed")
        if len(raw_name) > MAX_LABEL_NAME:
            raise Rejected(f"invalid label name {show(raw_name)}: at most {MAX_LABEL_NAME} bytes")
        if len(value) > MAX_LABEL_VALUE:
            raise Rejected(f"invalid label {show(raw_name)}: at most {MAX_LABEL_VALUE} bytes, got {len(value)}")
        try:
            labels[raw_name.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(
                f"invalid label {show(raw_name)}={show(value)}: expected UTF-8 text"
            ) from None
    return labels
