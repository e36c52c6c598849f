"""The server core: the standard library's template methods over a selector loop.

``serve_forever()`` waits on the listening socket and on a wakeup socket pair, so
``shutdown()`` stops it at once, whatever ``poll_interval`` is; ``poll_interval`` only sets how
often ``service_actions()`` runs when nothing happens. Errors from ``accept()`` follow
``AcceptErrorPolicy``: running out of descriptors pauses accepting briefly instead of spinning.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from ._listeners import AcceptErrorPolicy, format_address
from ._log import logger
from ._types import Address, ClientAddress, RequestHandlerFactory
from .strategies import ConcurrencyStrategy

__all__ = ["BaseServer", "TCPServer", "UDPServer", "UnixDatagramServer", "UnixStreamServer"]

_Socket = socket.socket  # servers have an attribute named ``socket``

if hasattr(selectors, "PollSelector"):
    _ServerSelector: type[selectors.BaseSelector] = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector


class _LoopControl:
    """Start and stop of ``serve_forever()``: a stop flag, a wakeup pair, a "stopped" event.

    The wakeup pair exists only while the loop runs; ``request_stop()`` sets the flag and
    writes one byte to it, which ends the loop's ``select()`` at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop_requested = False
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self.serving_thread: int | None = None
        self.stopped = threading.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def begin(self) -> socket.socket:
        """Mark the loop as running in this thread; return the socket to watch for wakeups."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        with self._lock:
            self._wakeup = (reader, writer)
            self.serving_thread = threading.get_ident()
            self.stopped.clear()
        return reader

    def end(self) -> None:
        with self._lock:
            self._stop_requested = False
            self.serving_thread = None
            wakeup, self._wakeup = self._wakeup, None
            self.stopped.set()
        if wakeup is not None:
            for sock in wakeup:
                sock.close()

    def request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            if self._wakeup is not None:
                with contextlib.suppress(OSError):  # full: a wakeup is pending already
                    self._wakeup[1].send(b"\0")


class BaseServer:
    """Base class of servers: the request loop and the hooks it calls.

    The hooks keep the standard library's names and order: ``get_request``,
    ``verify_request``, ``process_request``, ``finish_request``, ``shutdown_request``,
    ``close_request``, ``handle_error``, ``handle_timeout``, ``service_actions``.
    """

    timeout: float | None = None
    socket: _Socket  # set by TCPServer and the subclasses that own a socket

    def __init__(self, server_address: Address, RequestHandlerClass: RequestHandlerFactory) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._loop_control = _LoopControl()
        self._accept_policy = AcceptErrorPolicy()
        self._accept_paused_until = 0.0
        self._concurrency: ConcurrencyStrategy | None = self._make_concurrency()

    def _make_concurrency(self) -> ConcurrencyStrategy | None:
        """The strategy that runs requests; None runs each one inline, in the serving thread."""
        return None

    def server_activate(self) -> None:
        """Called by the constructor to activate the server; may be overridden."""

    def fileno(self) -> int:
        """The descriptor that becomes readable when a request is waiting; subclasses
        that own a socket provide it."""
        raise NotImplementedError

    def get_request(self) -> tuple[Any, ClientAddress]:
        """Take the next request: ``(request, client_address)``; subclasses provide it."""
        raise NotImplementedError

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        """Handle requests until ``shutdown()``; call ``service_actions()`` every loop turn.

        *poll_interval* bounds the wait between two ``service_actions()`` calls; it does not
        delay ``shutdown()``, which wakes the loop at once.
        """
        control = self._loop_control
        wakeup = control.begin()
        try:
            with _ServerSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(wakeup, selectors.EVENT_READ)
                accepting = True
                while not control.stop_requested:
                    pause = self._accept_paused_until - time.monotonic()
                    if (pause > 0) == accepting:
                        accepting = not accepting
                        if accepting:
                            selector.register(self, selectors.EVENT_READ)
                        else:
                            selector.unregister(self)
                    timeout = poll_interval if pause <= 0 else _min_timeout(poll_interval, pause)
                    ready = selector.select(timeout)
                    if control.stop_requested:
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._handle_request_noblock()
                    self.service_actions()
        finally:
            control.end()

    def shutdown(self) -> None:
        """Stop ``serve_forever()`` and wait until it has returned.

        Called from the thread that runs ``serve_forever()`` (from a handler of a server that
        serves inline), it only asks the loop to stop and returns, instead of deadlocking.
        """
        control = self._loop_control
        control.request_stop()
        if control.serving_thread != threading.get_ident():
            control.stopped.wait()

    def service_actions(self) -> None:
        """Called by ``serve_forever()`` on every turn of its loop; may be overridden."""

    def handle_request(self) -> None:
        """Handle one request, waiting at most ``timeout`` (or the socket's timeout) for it.

        When nothing arrives in time, ``handle_timeout()`` is called instead.
        """
        timeout = _min_timeout(self.socket.gettimeout(), self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with _ServerSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            while True:
                if selector.select(timeout):
                    return self._handle_request_noblock()
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout < 0:
                        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        """Accept one request and process it; the listener must be readable."""
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            pause = self._accept_policy.backoff_after(exc, self)
            if pause:
                self._accept_paused_until = time.monotonic() + pause
            return
        if self.verify_request(request, client_address):
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)
            except BaseException:
                self.shutdown_request(request)
                raise
        else:
            self.shutdown_request(request)

    def handle_timeout(self) -> None:
        """Called when ``handle_request()`` times out; may be overridden."""

    def verify_request(self, request: Any, client_address: ClientAddress) -> bool:
        """Return False to refuse the request (it is then closed); the default accepts all."""
        return True

    def process_request(self, request: Any, client_address: ClientAddress) -> None:
        """Serve the request: here, inline, then shut it down. Mixins override this."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Clean up the server; may be overridden."""

    def finish_request(self, request: Any, client_address: ClientAddress) -> None:
        """Serve the request by instantiating ``RequestHandlerClass``."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """End one request and close it."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Close one request."""

    def handle_error(self, request: Any, client_address: ClientAddress) -> None:
        """Report an exception raised while serving a request; serving goes on.

        Logs to the ``netserve`` logger at ERROR level with the traceback and the client's
        address. Call it only from an ``except`` block, as the server does.
        """
        logger.error(
            "Exception occurred during processing of request from %s",
            format_address(client_address),
            exc_info=True,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server_close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {format_address(self.server_address)}>"


def _min_timeout(a: float | None, b: float | None) -> float | None:
    """The smaller of two timeouts, where None means "no timeout"."""
    if a is None:
        return b
    return a if b is None else min(a, b)


class TCPServer(BaseServer):
    """A stream server (TCP by default; subclasses change ``address_family``).

    The constructor creates the socket and, with *bind_and_activate*, binds and listens;
    if that fails the socket is closed and the error raised.
    """

    address_family: socket.AddressFamily = socket.AF_INET
    socket_type: socket.SocketKind = socket.SOCK_STREAM
    request_queue_size: int = 5
    allow_reuse_address: bool = False
    allow_reuse_port: bool = False

    def __init__(
        self,
        server_address: Address,
        RequestHandlerClass: RequestHandlerFactory,
        bind_and_activate: bool = True,
    ) -> None:
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self) -> None:
        """Set the reuse options asked for, bind, and refresh ``server_address``."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen, with a backlog of ``request_queue_size``."""
        self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        self.socket.close()

    def fileno(self) -> int:
        """The listening socket's descriptor, for selectors."""
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, ClientAddress]:
        return self.socket.accept()

    def shutdown_request(self, request: Any) -> None:
        """Send FIN at once (``shutdown(SHUT_WR)``), then close."""
        with contextlib.suppress(OSError):  # the peer may be gone already (ENOTCONN)
            request.shutdown(socket.SHUT_WR)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        request.close()


class UDPServer(TCPServer):
    """A datagram server: each request is ``(data, server_socket)`` for one datagram."""

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size: int = 8192

    def get_request(self) -> tuple[Any, ClientAddress]:
        data, client_addr = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_addr

    def server_activate(self) -> None:
        """Datagram sockets do not listen."""

    def shutdown_request(self, request: Any) -> None:
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Nothing to close: the socket is the server's."""


class UnixStreamServer(TCPServer):
    """A stream server on a Unix domain socket (the address is a path)."""

    address_family = socket.AF_UNIX


class UnixDatagramServer(UDPServer):
    """A datagram server on a Unix domain socket (the address is a path)."""

    address_family = socket.AF_UNIX
