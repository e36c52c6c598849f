"""The open connections of one server: limits on how many, and a registry for draining."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from typing import Any

from ._types import ClientAddress

__all__ = ["ConnectionRegistry"]


class ConnectionRegistry:
    """Admits connections within ``max_total`` and ``max_per_ip`` (None: no limit) and keeps
    the admitted ones until they are released, so a stopping server can close what is left.

    Thread-safe: admissions happen in the accepting thread, releases in whichever thread
    closes the connection.
    """

    def __init__(self, max_total: int | None = None, max_per_ip: int | None = None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._lock = threading.Lock()
        self._open: dict[socket.socket, tuple[ClientAddress, str | None]] = {}
        self._per_ip: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: socket.socket, client_address: ClientAddress) -> str | None:
        """Register *conn*, or return why it is refused (and do not register it)."""
        ip = _ip_of(client_address)
        with self._lock:
            if self.max_total is not None and len(self._open) >= self.max_total:
                return "max_connections"
            if ip is not None and self.max_per_ip is not None:
                if self._per_ip[ip] >= self.max_per_ip:
                    return "max_connections_per_ip"
                self._per_ip[ip] += 1
            self._open[conn] = (client_address, ip)
        return None

    def release(self, conn: Any) -> None:
        """Forget *conn*; a connection never admitted (or released already) is ignored."""
        with self._lock:
            entry = self._open.pop(conn, None)
            if entry is None or entry[1] is None:
                return
            ip = entry[1]
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    def snapshot(self) -> list[tuple[socket.socket, ClientAddress]]:
        """The connections open now, with their client addresses."""
        with self._lock:
            return [(conn, entry[0]) for conn, entry in self._open.items()]


def _ip_of(client_address: ClientAddress) -> str | None:
    """The client's IP for per-IP limits; None for Unix sockets (no IP to count)."""
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return None
