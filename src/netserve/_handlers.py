"""Request handlers, compatible with the standard library's ``socketserver`` handlers.

A handler object lives for one request: its constructor runs ``setup()``, ``handle()`` and,
whatever ``handle()`` raised, ``finish()``. Exceptions propagate to the server, which passes
ordinary exceptions to ``server.handle_error()`` and closes the request.
"""

from __future__ import annotations

import contextlib
import io
import socket
from typing import TYPE_CHECKING, Any, cast

from ._types import ClientAddress

if TYPE_CHECKING:  # for annotations only: handlers do not depend on how they are served
    from _typeshed import ReadableBuffer

    from ._server import BaseServer

_Socket = socket.socket  # DatagramRequestHandler has an attribute named ``socket``

#: Families where TCP_NODELAY means something; elsewhere (Unix sockets) setting it would fail.
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)

__all__ = ["BaseRequestHandler", "DatagramRequestHandler", "StreamRequestHandler"]


class BaseRequestHandler:
    """Base class of request handlers: one instance per request.

    ``request`` is the connected socket for stream servers and ``(data, socket)`` for datagram
    servers; ``client_address`` is the peer's address; ``server`` the server that accepted it.
    """

    def __init__(self, request: Any, client_address: ClientAddress, server: BaseServer) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Prepare for ``handle()``; the default does nothing."""

    def handle(self) -> None:
        """Serve the request; the default does nothing."""

    def finish(self) -> None:
        """Clean up after ``handle()``, even when it raised; the default does nothing."""


class StreamRequestHandler(BaseRequestHandler):
    """A handler for stream sockets with file objects: ``rfile`` to read, ``wfile`` to write.

    Class attributes, as in the standard library: ``rbufsize`` (-1: buffered reads),
    ``wbufsize`` (0: every ``wfile.write()`` is sent at once, in full), ``timeout`` (seconds,
    applied to the socket; None: block) and ``disable_nagle_algorithm`` (sets TCP_NODELAY on
    TCP sockets; ignored on Unix sockets, where the standard library would fail).
    """

    rbufsize: int = -1
    wbufsize: int = 0
    timeout: float | None = None
    disable_nagle_algorithm: bool = False

    connection: socket.socket
    rfile: io.BufferedIOBase
    wfile: io.BufferedIOBase

    def setup(self) -> None:
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm and self.connection.family in _TCP_FAMILIES:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = cast(io.BufferedIOBase, self.connection.makefile("rb", self.rbufsize))
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = cast(io.BufferedIOBase, self.connection.makefile("wb", self.wbufsize))

    def finish(self) -> None:
        """Flush ``wfile`` (a final socket error there is ignored) and close both files."""
        if not self.wfile.closed:
            # a final error (the peer is gone, ECONNABORTED) leaves nothing to deliver to
            with contextlib.suppress(OSError):
                self.wfile.flush()
        self.wfile.close()
        self.rfile.close()


class _SocketWriter(io.BufferedIOBase):
    """An unbuffered writable file over a socket: ``write()`` sends all of its bytes at once.

    ``sendall()`` resumes after a signal interrupts it (PEP 475), so a write is never cut short;
    it returns the number of bytes given. Closing the writer leaves the socket open.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class DatagramRequestHandler(BaseRequestHandler):
    """A handler for datagram servers: ``rfile`` reads the packet, ``wfile`` collects the reply.

    ``packet`` is the datagram received and ``socket`` the server socket; ``finish()`` sends
    what was written to ``wfile`` back to ``client_address`` as one datagram.
    """

    packet: bytes
    socket: _Socket
    rfile: io.BytesIO
    wfile: io.BytesIO

    def setup(self) -> None:
        self.packet, self.socket = self.request
        self.rfile = io.BytesIO(self.packet)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
