"""netserve's own transports: the server's sockets on one ``epoll`` set that the event loop
watches as a single file descriptor (Linux).

Why not the loop's transports: memory. A connection on uvloop's transports costs about
1.2 KiB with a line handler (the transport object and its libuv handle); here it costs a
socket object and one small transport, about 0.7 KiB in all, which is what 10,000 held
connections per process need. Measured with ``../shared/bench``: short connections are
served a little faster, busy persistent ones 5-15% slower (each turn of the loop makes two
``epoll_wait`` calls, the loop's and this one's). The loop still runs everything else:
tasks, timers, thread hand-offs.

The transports keep asyncio's contract, so handlers (which are ``asyncio.Protocol`` objects)
cannot tell the difference: ``connection_made`` first, ``data_received`` per read,
``eof_received`` (returning True keeps our side open), ``pause_writing`` /
``resume_writing`` around the write high-water mark, and ``connection_lost`` exactly once,
from a callback scheduled after the socket is closed.

Resources and errors: a transport owns its socket and closes it when it closes. A socket
error (a reset, a broken pipe) closes the transport and is passed to ``connection_lost``; an
exception from a protocol callback is logged with its traceback and aborts that connection
only. ``accept()`` running out of file descriptors pauses that listener for
``ACCEPT_BACKOFF`` seconds, logged at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
from collections.abc import Callable
from typing import Any, Final

from .._listeners import AcceptErrorPolicy, format_address
from .._log import logger
from .._types import ClientAddress
from ..strategies.pool import LoadShare

__all__ = ["ACCEPT_BATCH", "MAX_EVENTS", "READ_SIZE", "EpollHub", "epoll_available"]

#: The most a single ``recv`` takes: one read's worth of a fast client; a connection with
#: more waiting is read again at the next turn (epoll is level-triggered), so one busy client
#: cannot hold the loop.
READ_SIZE: Final = 64 * 1024
#: Connections accepted per listener per turn of the loop, at most: a burst of new clients
#: is taken in batches, between which the connections already open are served.
ACCEPT_BATCH: Final = 64
#: Events taken from epoll per turn: what is left over is reported at the next turn.
MAX_EVENTS: Final = 1024

_IN: Final = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_OUT: Final = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4
_ERR_OR_HUP: Final = select.EPOLLERR | select.EPOLLHUP if hasattr(select, "EPOLLERR") else 8 | 16
_TRY_AGAIN: Final = (BlockingIOError, InterruptedError)
# Accepted sockets stay in blocking mode, and every read and write passes this flag instead:
# one system call less per connection (Python's accept cannot ask for a non-blocking socket).
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_DEFAULT_HIGH_WATER: Final = 64 * 1024

ProtocolFactory = Callable[[], asyncio.Protocol]


def epoll_available() -> bool:
    """Whether this platform has ``epoll`` (Linux)."""
    return hasattr(select, "epoll")


class EpollHub:
    """The epoll set of one server, watched by *loop* as one reader.

    ``close()`` stops watching and closes the set; the listeners and transports registered
    are closed by their owners (closing a transport after the hub is harmless).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._watched: dict[int, _Listener | _Transport] = {}
        self._dispatching = False  # in _on_ready
        self._left: set[int] = set()  # fds that left the set during this dispatch
        self.closed = False
        self.accept_errors = AcceptErrorPolicy()
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    def listen(
        self, sock: socket.socket, factory: ProtocolFactory, share: LoadShare | None = None
    ) -> _Listener:
        """Accept connections on the listening *sock* (which the listener then owns) and
        serve each with a protocol made by *factory*; with a *share*, only while it
        allows (a pre-forked worker's balance), looking again every ``recheck_interval``."""
        listener = _Listener(self, sock, factory, share)
        self.register(sock.fileno(), listener, _IN)
        return listener

    def register(self, fd: int, watched: _Listener | _Transport, mask: int) -> None:
        self._epoll.register(fd, mask)
        self._watched[fd] = watched

    def modify(self, fd: int, mask: int) -> None:
        self._epoll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None and not self.closed:
            self._epoll.unregister(fd)
            if self._dispatching:
                self._left.add(fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _on_ready(self) -> None:
        watched = self._watched
        left = self._left
        self._dispatching = True
        try:
            for fd, events in self._epoll.poll(0, MAX_EVENTS):
                # an fd that left the set during this turn may already be a new connection's
                # (accepted since): the event was the old one's
                if left and fd in left:
                    continue
                target = watched.get(fd)
                if target is not None:
                    target.on_events(events)
        finally:
            self._dispatching = False
            left.clear()


class _Listener:
    """A listening socket on the hub: accepts in batches and makes a transport per
    connection."""

    __slots__ = (
        "_declined",
        "_factory",
        "_hub",
        "_nodelay",
        "_nodelay_inherited",
        "_paused",
        "_share",
        "_sock",
        "closed",
    )

    def __init__(
        self,
        hub: EpollHub,
        sock: socket.socket,
        factory: ProtocolFactory,
        share: LoadShare | None,
    ) -> None:
        sock.setblocking(False)
        self._hub = hub
        self._share = share
        self._sock = sock
        self._factory = factory
        # TCP_NODELAY for every connection: set on the listener, which Linux passes on to
        # the sockets it accepts; the first connection tells whether this system does
        self._nodelay = sock.family in (socket.AF_INET, socket.AF_INET6)
        self._nodelay_inherited: bool | None = None  # not known before a connection
        if self._nodelay:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._paused = False
        self._declined = False  # paused because the share said no
        self.closed = False

    def __repr__(self) -> str:
        return format_address(self._sock.getsockname()) if not self.closed else "closed"

    def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self.closed:
            return
        self.closed = True
        if not self._paused:
            self._hub.unregister(self._sock.fileno())
        self._sock.close()

    def on_events(self, events: int) -> None:
        sock = self._sock
        family = sock.family
        share = self._share
        for _ in range(ACCEPT_BATCH):
            if share is not None and not share.allows():
                self._pause(share.recheck_interval)
                self._declined = True
                return
            try:
                fd, address = sock._accept()  # type: ignore[attr-defined]  # no socket object
            except _TRY_AGAIN:
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            try:
                if not _DONTWAIT or socket.getdefaulttimeout() is not None:
                    # with a default timeout the socket would wait (poll) before each call
                    conn.setblocking(False)
                if self._nodelay and not self._nodelay_inherited:
                    self._set_nodelay(conn)
            except OSError as exc:  # the client is already gone
                logger.debug("dropping connection from %s: %s", format_address(address), exc)
                conn.close()
                continue
            try:
                protocol = self._factory()
            except Exception:
                logger.exception("cannot serve the connection from %s", format_address(address))
                conn.close()
                continue
            _Transport(self._hub, conn, address).start(protocol)

    def _set_nodelay(self, conn: socket.socket) -> None:
        if self._nodelay_inherited is None:
            inherited = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            self._nodelay_inherited = inherited
            if inherited:
                return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _accept_failed(self, exc: OSError) -> None:
        pause = self._hub.accept_errors.backoff_after(exc, self)
        if pause and not self._paused:
            self._pause(pause)
            if self._share is not None:  # the other workers must not wait for this one
                self._share.set_room(id(self), False)

    def _pause(self, seconds: float) -> None:
        """Stop accepting for *seconds*."""
        if not self.closed and not self._paused:
            self._paused = True
            self._hub.unregister(self._sock.fileno())
            self._hub.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if self._paused and not self.closed and not self._hub.closed:
            self._paused = False
            if self._share is not None and not self._declined:
                self._share.set_room(id(self), True)  # back from an accept-error pause
            self._declined = False
            self._hub.register(self._sock.fileno(), self, _IN)

    def share_changed(self) -> None:
        """One of this worker's connections closed: if the share said no, ask it again
        now rather than at the next recheck."""
        if self._declined:
            self._resume()


class _Transport(asyncio.Transport):
    """One accepted connection: asyncio's ``Transport`` contract over a socket on the hub
    that is read and written without blocking (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_eof_written",
        "_fd",
        "_handed_out",
        "_high_water",
        "_hub",
        "_input_done",
        "_low_water",
        "_mask",
        "_peername",
        "_protocol",
        "_reading",
        "_sock",
        "_write_paused",
    )

    def __init__(self, hub: EpollHub, sock: socket.socket, peername: ClientAddress) -> None:
        # asyncio.BaseTransport.__init__ would give each connection an "extra" dict
        self._hub = hub
        self._sock = sock
        self._fd = sock.fileno()
        self._peername = peername
        self._protocol: asyncio.Protocol | None = None
        self._buffer: bytearray | None = None  # what the socket did not take yet
        self._mask = 0  # what the hub watches for
        self._reading = True  # not paused, input not ended
        self._input_done = False  # end of input was read
        self._closing = False
        self._eof_written = False
        self._write_paused = False  # the protocol was told pause_writing()
        self._high_water = _DEFAULT_HIGH_WATER
        self._low_water = _DEFAULT_HIGH_WATER // 4
        self._handed_out = False  # get_extra_info("socket") was called

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<netserve transport {format_address(self._peername)} {state}>"

    def start(self, protocol: asyncio.Protocol) -> None:
        """Watch the socket and give the protocol its ``connection_made``."""
        self._protocol = protocol
        self._mask = _IN
        self._hub.register(self._fd, self, _IN)
        try:
            protocol.connection_made(self)
        except Exception as exc:
            self._protocol_failed(protocol, "connection_made", exc)

    # -- events from the hub --------------------------------------------------------------

    def on_events(self, events: int) -> None:
        # watched only while reading or writing (see _update_mask): an error or hang-up
        # shows in the recv() or send() it wakes
        if self._reading and events & (_IN | _ERR_OR_HUP):
            self._read_ready()
        if self._buffer is not None and events & (_OUT | _ERR_OR_HUP):
            self._write_ready()

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE, _DONTWAIT)
        except _TRY_AGAIN:
            return
        except OSError as exc:
            self._close_now(exc)
            return
        protocol = self._protocol
        assert protocol is not None
        if data:
            try:
                protocol.data_received(data)
            except Exception as exc:
                self._protocol_failed(protocol, "data_received", exc)
            return
        self._reading = False  # end of input
        self._input_done = True
        self._update_mask()
        try:
            keep_open = protocol.eof_received()
        except Exception as exc:
            self._protocol_failed(protocol, "eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _write_ready(self) -> None:
        buffer = self._buffer
        assert buffer is not None
        try:
            sent = self._sock.send(buffer, _DONTWAIT)
        except _TRY_AGAIN:
            return
        except OSError as exc:
            self._close_now(exc)
            return
        del buffer[:sent]
        if buffer:
            self._maybe_resume_protocol(len(buffer))
            return
        self._buffer = None
        self._update_mask()
        self._maybe_resume_protocol(0)
        if self._buffer is not None or self._fd < 0:
            return  # resume_writing() wrote more (flushed later), or closed the transport
        if self._eof_written:
            self._shutdown_write()
        if self._closing:
            self._close_now(None)

    # -- asyncio.WriteTransport -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data*, or what the socket does not take at once later; dropped once the
        transport is closing. RuntimeError after ``write_eof()``."""
        if self._eof_written:
            raise RuntimeError("cannot write after write_eof()")
        if self._closing or not data:
            return
        buffer = self._buffer
        if buffer is not None:
            buffer += data
        else:
            if type(data) is memoryview:
                data = data.cast("B")  # so that len() counts bytes
            try:
                sent = self._sock.send(data, _DONTWAIT)
            except _TRY_AGAIN:
                sent = 0
            except OSError as exc:
                self._close_now(exc)
                return
            if sent == len(data):
                return
            buffer = self._buffer = bytearray(data[sent:])
            self._update_mask()
        if not self._write_paused and len(buffer) > self._high_water:
            self._write_paused = True
            self._call_protocol("pause_writing")

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """End our side of the connection once what was written is sent."""
        if self._eof_written or self._closing:
            return
        self._eof_written = True
        if self._buffer is None:
            self._shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._buffer) if self._buffer is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        if not self._write_paused and not self._closing and self.get_write_buffer_size() > high:
            self._write_paused = True
            self._call_protocol("pause_writing")

    # -- asyncio.ReadTransport -------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._update_mask()

    def resume_reading(self) -> None:
        # after end of input there is nothing more to read; the caller cannot tell, as with
        # asyncio's transports, so this is a no-op then
        if not self._reading and not self._closing and not self._input_done:
            self._reading = True
            self._update_mask()

    # -- asyncio.BaseTransport -------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "socket":
            if not self._handed_out and self._fd >= 0:  # for the caller, as asyncio's:
                self._handed_out = True  # never blocking
                self._sock.setblocking(False)
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once what was written is sent. ``connection_lost(None)``
        follows."""
        if self._closing:
            return
        self._closing = True
        self._reading = False  # nothing more reaches the protocol, as asyncio's transports do
        if self._buffer is None:
            self._close_now(None)
        else:
            self._update_mask()

    def abort(self) -> None:
        """Close now, dropping what was not sent. ``connection_lost(None)`` follows."""
        self._close_now(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        # None once connection_lost has returned, as with asyncio's transports
        return self._protocol  # type: ignore[return-value]

    # -- inside ----------------------------------------------------------------------------------

    def _update_mask(self) -> None:
        """Watch for what the transport waits for; with nothing to wait for, leave the set
        (as asyncio's transports leave the selector): epoll would report a hang-up (the
        client ended its side after we ended ours) on every turn."""
        mask = (_IN if self._reading else 0) | (_OUT if self._buffer is not None else 0)
        old = self._mask
        fd = self._fd
        if mask == old or fd < 0:
            return
        self._mask = mask
        if not old:
            self._hub.register(fd, self, mask)
        elif not mask:
            self._hub.unregister(fd)
        else:
            self._hub.modify(fd, mask)

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._close_now(exc)

    def _maybe_resume_protocol(self, size: int) -> None:
        if self._write_paused and size <= self._low_water:
            self._write_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, method: str) -> None:
        protocol = self._protocol
        try:
            getattr(protocol, method)()
        except Exception as exc:
            self._protocol_failed(protocol, method, exc)

    def _protocol_failed(self, protocol: object, method: str, exc: Exception) -> None:
        logger.error(
            "%s.%s failed for %s; closing the connection",
            type(protocol).__qualname__,
            method,
            format_address(self._peername),
            exc_info=exc,
        )
        self._close_now(exc)

    def _close_now(self, exc: Exception | None) -> None:
        """Close the socket at once and schedule ``connection_lost(exc)`` (once)."""
        fd = self._fd
        if fd < 0:
            return
        self._fd = -1
        self._closing = True
        self._reading = False
        self._buffer = None
        if isinstance(exc, OSError) and exc.errno not in _QUIET_ERRNOS:
            logger.debug("connection from %s failed: %r", format_address(self._peername), exc)
        self._hub.unregister(fd)
        self._sock.close()
        loop = self._hub.loop
        if self._protocol is None:
            return
        if loop.is_closed():  # its owner is gone, and the connection with it: nobody to tell
            self._protocol = None
        else:
            loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            # no cycle with the protocol: both are freed by reference counts
            self._protocol = None


_QUIET_ERRNOS: Final = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT})
