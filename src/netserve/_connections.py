"""The open connections of one server: limits on how many, and a registry for draining."""

from __future__ import annotations

import socket
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import IdleTimeoutError
from ._types import ClientAddress

__all__ = ["ConnectionRegistry", "IdleTimeoutSocket"]

#: Entries of connections closed without ``release()`` are dropped when the registry grows
#: past this size (then past twice what remained): amortized O(1) per connection.
_PRUNE_AT_LEAST = 1024


@dataclass
class _Entry:
    conn: weakref.ref[socket.socket]
    client_address: ClientAddress
    ip: str | None


class ConnectionRegistry:
    """Admits connections within ``max_total`` and ``max_per_ip`` (None: no limit) and keeps
    track of the admitted ones, so a stopping server can close what is left.

    A connection counts until ``release()`` (the server calls it from ``close_request()``),
    or, when a limit is reached, until its socket is found closed or garbage-collected (the
    registry holds only weak references); so a subclass that overrides ``close_request()``
    or ``shutdown_request()`` without calling the base class leaks nothing. Thread-safe.
    """

    def __init__(self, max_total: int | None = None, max_per_ip: int | None = None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._lock = threading.Lock()
        self._open: dict[int, _Entry] = {}
        self._per_ip: Counter[str] = Counter()
        self._prune_at = _PRUNE_AT_LEAST

    @property
    def has_limits(self) -> bool:
        return self.max_total is not None or self.max_per_ip is not None

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: socket.socket, client_address: ClientAddress) -> str | None:
        """Register *conn*, or return why it is refused (and do not register it)."""
        ip = _ip_of(client_address)
        with self._lock:
            reason = self._over_limit(ip)
            if reason is not None:
                self._forget_closed()
                reason = self._over_limit(ip)
                if reason is not None:
                    return reason
            if len(self._open) >= self._prune_at:
                self._forget_closed()
                self._prune_at = max(_PRUNE_AT_LEAST, 2 * len(self._open))
            key = id(conn)
            if key in self._open:  # a dead socket's id, reused: that entry is stale
                self._remove(key)
            if ip is not None:
                self._per_ip[ip] += 1
            self._open[key] = _Entry(weakref.ref(conn), client_address, ip)
        return None

    def _over_limit(self, ip: str | None) -> str | None:
        if self.max_total is not None and len(self._open) >= self.max_total:
            return "max_connections"
        if ip is not None and self.max_per_ip is not None and self._per_ip[ip] >= self.max_per_ip:
            return "max_connections_per_ip"
        return None

    def transfer(self, conn: Any, successor: Any) -> None:
        """Let *successor* (any object with ``fileno()``, -1 once closed, and weakly
        referable) stand for the admitted *conn* from now on; nothing if *conn* was not."""
        with self._lock:
            entry = self._open.get(id(conn))
            if entry is None or entry.conn() is not conn:
                return
            del self._open[id(conn)]
            entry.conn = weakref.ref(successor)
            self._open[id(successor)] = entry

    def release(self, conn: Any) -> None:
        """Forget *conn*; a connection never admitted (or released already) is ignored."""
        with self._lock:
            entry = self._open.get(id(conn))
            if entry is not None and entry.conn() is conn:
                self._remove(id(conn))

    def _remove(self, key: int) -> None:
        """Drop one entry; the caller holds the lock."""
        entry = self._open.pop(key, None)
        if entry is None:
            return
        if entry.ip is not None:
            self._per_ip[entry.ip] -= 1
            if not self._per_ip[entry.ip]:
                del self._per_ip[entry.ip]

    def _forget_closed(self) -> None:
        """Drop entries whose socket was closed without ``release()``; the caller holds the lock."""
        for key in [key for key, entry in self._open.items() if _is_closed(entry.conn())]:
            self._remove(key)

    def snapshot(self) -> list[tuple[socket.socket, ClientAddress]]:
        """The connections open now, with their client addresses."""
        with self._lock:
            entries = [(entry.conn(), entry.client_address) for entry in self._open.values()]
        return [(conn, address) for conn, address in entries if conn and not _is_closed(conn)]


def _is_closed(conn: socket.socket | None) -> bool:
    return conn is None or conn.fileno() == -1


def _ip_of(client_address: ClientAddress) -> str | None:
    """The client's IP for per-IP limits; None for Unix sockets (no IP to count)."""
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return None


class IdleTimeoutSocket(socket.socket):
    """An accepted connection under the server's ``idle_timeout``, which is its timeout.

    Its reads and writes raise ``IdleTimeoutError`` when the timeout passes, so that the
    server can tell an idle client from any other timeout (a backend's, say). ``sendall()``
    waits up to the timeout for each piece the client takes, not for the whole of it: a
    client that keeps reading a long reply is never cut off. Once the handler sets a timeout
    of its own (``settimeout``, ``setblocking``; ``StreamRequestHandler.timeout`` does), the
    socket is a plain ``socket.socket`` again, and that timeout has its standard meaning.

    The server makes an accepted ``socket.socket`` one by assigning ``__class__`` (the
    layout is the same); other socket types keep the plain timeout.
    """

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            raise self._idle() from None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            raise self._idle() from None

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except TimeoutError:
            raise self._idle() from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        with memoryview(data) as view, view.cast("B") as rest:
            while rest:
                rest = rest[self.send(rest, flags) :]

    # the rarer calls, through one helper
    def recvfrom(self, *args: Any) -> Any:
        return self._idle_guard(super().recvfrom, *args)

    def recvfrom_into(self, *args: Any) -> Any:
        return self._idle_guard(super().recvfrom_into, *args)

    def recvmsg(self, *args: Any) -> Any:
        return self._idle_guard(super().recvmsg, *args)

    def recvmsg_into(self, *args: Any) -> Any:
        return self._idle_guard(super().recvmsg_into, *args)

    def sendto(self, *args: Any) -> Any:
        return self._idle_guard(super().sendto, *args)

    def sendmsg(self, *args: Any) -> Any:
        return self._idle_guard(super().sendmsg, *args)

    def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        return self._idle_guard(super().sendfile, *args, **kwargs)

    def _idle_guard(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except TimeoutError:
            raise self._idle() from None

    def settimeout(self, value: float | None) -> None:
        super().settimeout(value)
        self.__class__ = socket.socket  # type: ignore[assignment]

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        self.__class__ = socket.socket  # type: ignore[assignment]

    def _idle(self) -> IdleTimeoutError:
        return IdleTimeoutError(f"no traffic for {self.gettimeout():g} s (idle_timeout)")
