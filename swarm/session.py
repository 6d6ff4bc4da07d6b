"""One libtorrent session per process, set up for a datacenter LAN."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlencode

import libtorrent as lt

from swarm.alerts import AlertPump
from swarm.errors import InvalidMetainfo, SwarmError
from swarm.settings import SwarmSettings
from swarm.task import TaskHandle

log = logging.getLogger(__name__)

SEEDER_PEER_ID_PREFIX = "-PS0100-"

# libtorrent 2.1's disk I/O back ends, by the name SwarmSettings.disk_io uses.
# Measured with two bare sessions on loopback and a 2 GiB file (libtorrent
# 2.1.1, 2 vCPUs). The default back end (pread with a store buffer) took
# 26.7 s and peaked at 180 MiB RSS, growing with the file. The posix back end
# took 6.1 s and peaked at 48 MiB.
_DISK_IO_CONSTRUCTORS = {
    "posix": "posix_disk_io_constructor",
    "pread": "pread_disk_io_constructor",
    "mmap": "mmap_disk_io_constructor",
    "default": "default_disk_io_constructor",
}


def _libtorrent_settings(settings: SwarmSettings) -> dict:
    alert_categories = lt.alert.category_t
    return {
        "listen_interfaces": settings.listen_interfaces,
        "peer_fingerprint": settings.peer_id_prefix,
        "user_agent": "p2p-fetch/0.1 libtorrent/" + lt.__version__,
        # The tracker is the only source of peers.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # uTP collapses to a few MB/s on loopback and buys nothing on a LAN.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Hosts behind one address (and tests on loopback) run several peers per IP.
        "allow_multiple_connections_per_ip": True,
        # Every task runs at once; libtorrent's queueing would pause all but a few.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "active_tracker_limit": -1,
        # Unchoke everyone: inside a datacenter there is no tit-for-tat to play.
        "unchoke_slots_limit": -1,
        "connections_limit": settings.connections_limit,
        # Plaintext on the LAN; encryption costs CPU and hides nothing from the fabric.
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        # Keep many requests in flight to fill a fast, short-RTT link.
        "max_out_request_queue": 1500,
        "max_allowed_in_request_queue": 4000,
        "send_buffer_watermark": 1024 * 1024,
        # Blocks received but not yet written wait in libtorrent 2.1's store
        # buffer. Its default cap of 100 MiB showed up as peak RSS whenever the
        # disk lagged the network, so a small cap keeps memory constant.
        "max_queued_disk_bytes": 16 * 1024 * 1024,
        "smooth_connects": False,
        "connection_speed": 200,
        "close_redundant_connections": True,
        "upload_rate_limit": settings.upload_limit,
        "download_rate_limit": settings.download_limit,
        "alert_queue_size": 10_000,
        "alert_mask": (
            alert_categories.error_notification
            | alert_categories.status_notification
            | alert_categories.storage_notification
            | alert_categories.piece_progress_notification
            | alert_categories.block_progress_notification
            | alert_categories.tracker_notification
            | alert_categories.performance_warning
        ),
    }


def _apply_limits_to_lan_peers(session: lt.session) -> None:
    """Put every peer, LAN or not, in the global peer class.

    libtorrent's default filter puts 127/8, 10/8, 172.16/12, 192.168/16 and
    169.254/16 in the local peer class, which has no rate limits; in a
    datacenter every peer is one of those, so the host limits would never apply.
    """
    everyone = lt.ip_filter()
    global_class = 1 << session.global_peer_class_id
    everyone.add_rule("0.0.0.0", "255.255.255.255", global_class)
    everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", global_class)
    session.set_peer_class_filter(everyone)


def _announce_url_with_labels(url: str, labels: dict[str, str]) -> str:
    if not labels:
        return url
    separator = "&" if "?" in url else "?"
    return url + separator + urlencode(labels)


def _announce_urls(metainfo: dict) -> list[str]:
    """Return the metainfo's announce URLs: `announce-list` tiers flattened (BEP 12), else `announce`."""
    tiers = metainfo.get(b"announce-list") or []
    urls = [url.decode() for tier in tiers for url in tier if isinstance(url, bytes)]
    if not urls and isinstance(metainfo.get(b"announce"), bytes):
        urls = [metainfo[b"announce"].decode()]
    return urls


class Session:
    """The process's libtorrent session, with its alert thread and its tasks."""

    def __init__(self, settings: SwarmSettings | None = None):
        self.settings = settings or SwarmSettings()
        params = lt.session_params(_libtorrent_settings(self.settings))
        params.disk_io_constructor = _DISK_IO_CONSTRUCTORS[self.settings.disk_io]
        self._session = lt.session(params)
        _apply_limits_to_lan_peers(self._session)

        self._tasks: dict[str, TaskHandle] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._seeder_prefix = SEEDER_PEER_ID_PREFIX.encode()

        self._pump = AlertPump(self._session, self._alert_handlers(), tick=self._tick)
        self._pump.start()
        log.info("swarm session started", extra={"listen": self.settings.listen_interfaces, "port": self.listen_port})

    # Alert handlers, one per alert type.

    def _alert_handlers(self) -> dict:
        return {
            lt.piece_finished_alert: lambda alert: self._task_of(alert, TaskHandle._on_piece_finished),
            lt.torrent_finished_alert: lambda alert: self._task_of(alert, TaskHandle._on_finished),
            lt.block_finished_alert: self._on_block_finished,
            lt.cache_flushed_alert: lambda alert: self._task_of(alert, TaskHandle._on_cache_flushed),
            lt.read_piece_alert: self._on_read_piece,
            lt.hash_failed_alert: self._on_hash_failed,
            lt.torrent_error_alert: self._on_torrent_error,
            lt.file_error_alert: self._on_torrent_error,
            lt.tracker_error_alert: self._on_tracker_error,
            lt.listen_failed_alert: lambda alert: log.error("listen failed", extra={"error": alert.message()}),
            lt.alerts_dropped_alert: lambda alert: log.warning("libtorrent alert queue overflowed; raise alert_queue_size"),
            lt.performance_alert: lambda alert: log.debug("libtorrent performance warning", extra={"warning": alert.message()}),
        }

    def _lookup(self, alert: lt.alert) -> TaskHandle | None:
        try:
            info_hash = str(alert.handle.info_hashes().v1)
        except RuntimeError:
            return None
        # add_task registers a task under this lock right after libtorrent adds
        # it. An alert posted in between (a small torrent can finish checking
        # that fast) waits here, so it is not dropped for lack of a task.
        with self._lock:
            return self._tasks.get(info_hash)

    def _task_of(self, alert: lt.alert, method) -> None:
        task = self._lookup(alert)
        if task is not None:
            method(task)

    def _on_block_finished(self, alert: lt.alert) -> None:
        task = self._lookup(alert)
        if task is not None:
            task._on_block_finished(alert.piece_index, alert.block_index, alert.pid.to_bytes())

    def _on_read_piece(self, alert: lt.alert) -> None:
        task = self._lookup(alert)
        if task is not None:
            error = alert.error.message() if alert.error.value() else None
            task._on_read_piece(alert.piece, alert.buffer, error)

    def _on_hash_failed(self, alert: lt.alert) -> None:
        task = self._lookup(alert)
        if task is not None:
            task._on_hash_failed()
        log.warning("piece failed its hash check", extra={"info_hash": task.info_hash if task else "?", "piece": alert.piece_index})

    def _on_torrent_error(self, alert: lt.alert) -> None:
        task = self._lookup(alert)
        message = alert.message()
        log.error("task error", extra={"info_hash": task.info_hash if task else "?", "error": message})
        if task is not None:
            task._on_error(message)

    def _on_tracker_error(self, alert: lt.alert) -> None:
        task = self._lookup(alert)
        log.warning("announce failed", extra={"info_hash": task.info_hash if task else "?", "error": alert.message()})

    def _tick(self) -> None:
        pass

    # Public API.

    @property
    def listen_port(self) -> int:
        return self._session.listen_port()

    def add_task(
        self,
        metainfo: bytes,
        save_path: Path,
        *,
        seed_mode: bool = False,
        upload_limit: int = 0,
        download_limit: int = 0,
        sequential: bool = False,
    ) -> TaskHandle:
        """Add a single-file v1 torrent and start it; return the existing task if already added.

        With `seed_mode` the data is trusted to be complete and is not re-checked.
        """
        if self._closed:
            raise SwarmError("the swarm session is closed")
        try:
            decoded = lt.bdecode(metainfo) if metainfo else None
        except RuntimeError as error:
            raise InvalidMetainfo(f"invalid metainfo: {error}") from None
        if not isinstance(decoded, dict):
            raise InvalidMetainfo("invalid metainfo: not a bencoded dictionary")
        try:
            info = lt.torrent_info(decoded)
        except (RuntimeError, TypeError, ValueError) as error:
            raise InvalidMetainfo(f"invalid metainfo: {error}") from None
        if info.num_files() != 1:
            raise InvalidMetainfo(f"invalid metainfo: expected a single-file torrent, got {info.num_files()} files")

        info_hash = str(info.info_hashes().v1)
        with self._lock:
            existing = self._tasks.get(info_hash)
            if existing is not None:
                return existing

            save_path.mkdir(parents=True, exist_ok=True)
            params = lt.add_torrent_params()
            params.ti = info
            params.save_path = str(save_path)
            params.flags &= ~lt.torrent_flags.auto_managed
            params.flags &= ~lt.torrent_flags.paused
            if seed_mode:
                params.flags |= lt.torrent_flags.seed_mode
            if sequential:
                params.flags |= lt.torrent_flags.sequential_download
            params.trackers = [
                _announce_url_with_labels(url, self.settings.announce_params) for url in _announce_urls(decoded)
            ]
            params.flags |= lt.torrent_flags.override_trackers
            params.upload_limit = upload_limit or -1
            params.download_limit = download_limit or -1
            params.max_connections = self.settings.task_connections_limit

            handle = self._session.add_torrent(params)
            task = TaskHandle(handle, info, save_path, self._seeder_prefix)
            # Data added in seed mode is complete by contract, and libtorrent
            # posts no torrent_finished_alert for it.
            task._complete = seed_mode
            self._tasks[info_hash] = task

        log.info(
            "task added",
            extra={"info_hash": info_hash, "torrent_name": task.name, "size": task.size, "seed_mode": seed_mode},
        )
        return task

    def get(self, info_hash: str) -> TaskHandle | None:
        return self._tasks.get(info_hash)

    def tasks(self) -> list[TaskHandle]:
        return list(self._tasks.values())

    def remove_task(self, info_hash: str, delete_files: bool = False) -> None:
        """Stop a task (announcing `stopped`), optionally deleting its data."""
        with self._lock:
            task = self._tasks.pop(info_hash, None)
        if task is None:
            return
        flags = lt.session.delete_files if delete_files else 0
        self._session.remove_torrent(task._handle, flags)
        log.info("task removed", extra={"info_hash": info_hash, "deleted": delete_files})

    def set_limits(self, upload: int, download: int) -> None:
        """Change the session's upload and download limits (bytes/s, 0 for none) while it runs."""
        self.settings = self.settings.model_copy(update={"upload_limit": upload, "download_limit": download})
        self._session.apply_settings({"upload_rate_limit": upload, "download_rate_limit": download})

    def close(self) -> None:
        """Stop every task and the session; closing twice is safe."""
        if self._closed:
            return
        self._closed = True
        self._pump.stop()
        # Deleting the session announces `stopped` to the trackers, within
        # libtorrent's stop_tracker_timeout.
        self._session.apply_settings({"stop_tracker_timeout": 2})
        self._pump = None
        self._tasks.clear()
        del self._session
        log.info("swarm session closed")
