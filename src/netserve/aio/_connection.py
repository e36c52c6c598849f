"""What every connection of an ``AsyncServer`` shares: admission, backpressure, idleness and
closing. The handler classes derive from ``Connection``: a handler object *is* the
``asyncio.Protocol`` of its connection, so a connection costs one Python object and no call
goes through a second one.

Names starting with ``_ns_`` are netserve's: a handler subclass must not use them. The
asyncio callbacks (``connection_made``, ``data_received``, ``eof_received``,
``connection_lost``, ``pause_writing``, ``resume_writing``) belong to netserve too.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import sys
from typing import TYPE_CHECKING, Any, Final, cast

from .._listeners import format_address
from .._log import logger
from .._types import ClientAddress

if TYPE_CHECKING:
    from ._server import AsyncServer

__all__ = [
    "LINGER_TIMEOUT",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "Connection",
    "log_handler_error",
]

#: Past this many bytes waiting in a connection's transport (the client reads slower than the
#: server writes), the server stops reading from that client until they drop below
#: ``WRITE_LOW_WATER``: so what a client that does not read can make the server hold is
#: bounded by about this plus one read's worth of replies. 64 KiB is asyncio's default; with
#: 10,000 connections it bounds buffered replies at 640 MiB in the worst case.
WRITE_HIGH_WATER: Final = 64 * 1024
#: Where reading resumes: a quarter of the high-water mark, as asyncio does, so that a
#: client reading steadily does not flip the connection between paused and reading.
WRITE_LOW_WATER: Final = WRITE_HIGH_WATER // 4
#: After an error reply, how long the server keeps reading (and discarding) what the client
#: still sends before it closes: closing with unread input makes the kernel send a reset,
#: which can destroy the error reply before the client reads it.
LINGER_TIMEOUT: Final = 2.0

# Why reading is paused: a bit each, reading resumes when none is left.
PAUSE_WRITE: Final = 1  # the transport is over WRITE_HIGH_WATER
PAUSE_INPUT: Final = 2  # the handler has enough input waiting (read buffer, queued messages)
PAUSE_HELD: Final = 4  # replies passed WRITE_HIGH_WATER: the messages left are handled first

# The life of a connection.
NEW: Final = 0  # before connection_made
OPEN: Final = 1
CLOSING: Final = 2  # the server closes it (flushing, or lingering after an error reply)
LOST: Final = 3  # connection_lost was called: the socket is closed
REFUSED: Final = 4  # turned away by a limit; never counted, never served

_UNKNOWN: Final[Any] = object()  # client_address not asked for yet

# Linux's SIOCOUTQ: the bytes in a socket's send queue (not yet sent, or not yet acknowledged)
_SIOCOUTQ: Final = 0x5411 if sys.platform.startswith("linux") else None
_INT: Final = struct.Struct("i")
_NO_BYTES: Final = bytes(_INT.size)


class Connection(asyncio.Protocol):
    """The base of the handler classes: one instance per connection, made by the server.

    ``server`` is the ``AsyncServer``; ``client_address`` the peer's address (fetched when
    first read). A subclass serves the connection in ``_ns_opened`` and says in
    ``_ns_waiting_for_client`` whether it is waiting for the client, which is when the idle
    timeout applies.
    """

    __slots__ = (
        "_ns_address",
        "_ns_idle",
        "_ns_ip",
        "_ns_paused",
        "_ns_state",
        "_ns_transport",
        "server",
    )

    server: AsyncServer
    _ns_transport: asyncio.Transport

    def __init__(self, server: AsyncServer) -> None:
        self.server = server
        self._ns_address: ClientAddress = _UNKNOWN
        self._ns_ip: str | None = None  # set when a per-IP limit counts this connection
        self._ns_idle = 0  # idle sweeps seen in a row with no activity
        self._ns_paused = 0  # PAUSE_* bits
        self._ns_state = NEW

    # -- what the handler sees -------------------------------------------------------------

    @property
    def client_address(self) -> ClientAddress:
        """The client's address, as ``accept()`` gives it (``(host, port)`` for TCP)."""
        address = self._ns_address
        if address is _UNKNOWN:
            address = self._ns_address = self._ns_transport.get_extra_info("peername")
        return address

    @client_address.setter
    def client_address(self, address: ClientAddress) -> None:
        self._ns_address = address

    def __repr__(self) -> str:
        where = format_address(self.client_address) if self._ns_state != NEW else "unconnected"
        return f"<{type(self).__qualname__} {where}>"

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ns_transport = cast(asyncio.Transport, transport)
        reason = self.server._ns_admit(self)
        if reason is not None:
            self._ns_state = REFUSED
            self.server._ns_refuse(self, reason)
            return
        self._ns_state = OPEN
        self._ns_transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self._ns_opened()

    def pause_writing(self) -> None:
        # the client reads slower than we write: read no more requests from it for now
        self._ns_pause(PAUSE_WRITE)

    def resume_writing(self) -> None:
        self._ns_idle = 0  # the client is reading: not idle
        self._ns_resume(PAUSE_WRITE)

    # -- for subclasses ----------------------------------------------------------------------

    def _ns_opened(self) -> None:
        """Start serving: the connection is admitted and ``_ns_transport`` is set."""
        raise NotImplementedError

    def _ns_waiting_for_client(self) -> bool:
        """Whether the connection is waiting for its client, to send or to read: what the
        idle timeout measures. The default covers writes: a connection closing (flushing)
        or paused on a full write buffer."""
        return self._ns_state == CLOSING or bool(self._ns_paused & PAUSE_WRITE)

    def _ns_unsent(self) -> int:
        """The bytes written that the client has not received yet: what the transport
        holds and, on Linux, what the kernel holds (the client's receive window is full
        while it reads slowly). Costs a system call; for the idle sweep, not per request."""
        if self._ns_state == LOST:
            return 0  # its file descriptor may be another connection's by now
        transport = self._ns_transport
        unsent = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if _SIOCOUTQ is None or sock is None or sock.fileno() < 0:
            return unsent
        try:
            queued: int = _INT.unpack(fcntl.ioctl(sock.fileno(), _SIOCOUTQ, _NO_BYTES))[0]
        except OSError:  # closed meanwhile, or not a socket this ioctl knows
            return unsent
        return unsent + queued

    def _ns_begin_stop(self) -> None:
        """The server stops gracefully: finish what is in flight, then close."""
        raise NotImplementedError

    def _ns_force_stop(self) -> None:
        """The server stops now (a fast stop, or the drain timeout passed): close at once."""
        self._ns_abort()

    def _ns_pause(self, reason: int) -> None:
        """Stop reading from the client for *reason* (a ``PAUSE_*`` bit)."""
        if not self._ns_paused and self._ns_state == OPEN:
            self._ns_transport.pause_reading()
        self._ns_paused |= reason

    def _ns_resume(self, reason: int) -> None:
        """Drop *reason*; read from the client again when no reason is left."""
        paused = self._ns_paused
        if paused & reason:
            self._ns_paused = paused = paused & ~reason
            if not paused and self._ns_state == OPEN:
                self._ns_transport.resume_reading()

    def _ns_close(self) -> None:
        """Close once the replies written so far are sent (connection_lost follows)."""
        if self._ns_state == OPEN:
            self._ns_state = CLOSING
            self._ns_transport.close()

    def _ns_abort(self) -> None:
        """Close now, dropping unsent replies (connection_lost follows)."""
        if self._ns_state in (OPEN, CLOSING):
            self._ns_state = CLOSING
            self._ns_transport.abort()

    def _ns_close_after_error(self, reply: bytes, client_done: bool = False) -> None:
        """Send *reply*, end our side, then read and discard what the client still sends for
        up to ``LINGER_TIMEOUT`` before closing, so a reset cannot destroy the reply before
        the client reads it. An empty *reply*, or a client that has ended its side
        (*client_done*: nothing more can come), makes it a plain close after the reply."""
        if self._ns_state != OPEN:
            return
        transport = self._ns_transport
        if not reply or client_done:
            if reply:
                transport.write(reply)
            self._ns_close()
            return
        transport.write(reply)
        self._ns_state = CLOSING
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._ns_paused = 0
        transport.resume_reading()  # data_received discards while CLOSING; EOF closes
        asyncio.get_running_loop().call_later(LINGER_TIMEOUT, self._ns_linger_expired)

    def _ns_linger_expired(self) -> None:
        if self._ns_state == CLOSING:
            self._ns_transport.abort()

    def _ns_log_closing(self, level: int, why: object) -> None:
        logger.log(
            level, "closing connection from %s: %s", format_address(self.client_address), why
        )


def log_handler_error(
    connection: Connection, where: str, error: BaseException | None = None
) -> None:
    """Log the handler's exception with its traceback: *error*, or (in an ``except`` block)
    the one being handled."""
    logger.error(
        "%s.%s failed for %s; closing the connection",
        type(connection).__qualname__,
        where,
        format_address(connection.client_address),
        exc_info=error if error is not None else True,
    )
