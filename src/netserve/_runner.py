"""Assembling servers from a ``Config`` and running several of them until told to stop.

This is what ``netserve serve`` runs; it raises and logs, and leaves exit codes and signal
handlers to the CLI.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import socket
import stat
import threading
import time
from typing import Any

from ._errors import BindError, ConfigError, HandlerImportError
from ._handlers import BaseRequestHandler, StreamRequestHandler
from ._listeners import Endpoint, format_address
from ._log import logger
from ._server import BaseServer, TCPServer, UDPServer
from ._types import ClientAddress, RequestHandlerFactory
from .compat import (
    ThreadingTCPServer,
    ThreadingUDPServer,
    ThreadingUnixDatagramServer,
    ThreadingUnixStreamServer,
)
from .config import Config

__all__ = ["ServerGroup", "build_servers", "close_server", "load_handler"]

#: Listen backlog: the stdlib's 5 refuses connections under any burst; the kernel caps this
#: at net.core.somaxconn anyway.
LISTEN_BACKLOG = 1024


def load_handler(spec: str) -> type[BaseRequestHandler]:
    """Import ``MODULE:CLASS`` and check that it names a request handler class.

    Raises ``HandlerImportError`` saying what failed (the module, the name, or the kind).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise HandlerImportError(f"{spec!r} is not of the form MODULE:HANDLER")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerImportError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        handler: object = module
        for part in attr.split("."):
            handler = getattr(handler, part)
    except AttributeError:
        raise HandlerImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(handler, type) and issubclass(handler, BaseRequestHandler)):
        raise HandlerImportError(f"{spec} is not a netserve.BaseRequestHandler subclass")
    return handler


def _server_class(endpoint: Endpoint, udp: bool) -> type[TCPServer]:
    """A thread-per-request server class for the endpoint's family and kind."""
    if endpoint.family == socket.AF_UNIX:
        base: type[TCPServer] = ThreadingUnixDatagramServer if udp else ThreadingUnixStreamServer
    else:
        base = ThreadingUDPServer if udp else ThreadingTCPServer
    attrs = {
        "address_family": endpoint.family,
        "allow_reuse_address": not udp and endpoint.family != socket.AF_UNIX,
        "request_queue_size": LISTEN_BACKLOG,
        "daemon_threads": True,  # a fast stop must not wait for clients that stay connected
        "block_on_close": False,
    }
    return type(base.__name__, (base,), attrs)


def _logged(handler: RequestHandlerFactory) -> RequestHandlerFactory:
    """Wrap *handler* so that each request ends with one log line: client and duration."""

    def serve_and_log(request: Any, client_address: ClientAddress, server: BaseServer) -> None:
        started = time.monotonic()
        outcome = "failed"
        try:
            handler(request, client_address, server)
            outcome = "closed"
        finally:
            logger.info(
                "%s %s after %.1f ms",
                _peer(request, client_address),
                outcome,
                (time.monotonic() - started) * 1000,
            )

    return serve_and_log


def _peer(request: Any, client_address: ClientAddress) -> str:
    if isinstance(request, socket.socket) and request.family == socket.AF_UNIX:
        return "unix client"
    return format_address(client_address)


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a Unix socket file left by a server that is gone; never a live one or a file."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            logger.info("removed stale socket file %s", path)
        except OSError:
            pass


def build_servers(config: Config, handler: RequestHandlerFactory) -> list[TCPServer]:
    """Bind one server per ``config.bind`` address; all or none.

    Raises ``BindError`` naming the address when one cannot be bound; servers already bound
    are closed first.
    """
    if config.udp and isinstance(handler, type) and issubclass(handler, StreamRequestHandler):
        raise ConfigError(f"udp: {handler.__qualname__} is a stream handler; it cannot serve UDP")
    servers: list[TCPServer] = []
    try:
        for endpoint in config.endpoints():
            servers.append(_bind(endpoint, config.udp, _logged(handler)))
    except BaseException:
        for server in servers:
            close_server(server)
        raise
    return servers


def close_server(server: TCPServer) -> None:
    """Close *server* and remove its Unix socket file, if it has one."""
    server.server_close()
    if server.address_family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            os.unlink(str(server.server_address))


def _bind(endpoint: Endpoint, udp: bool, handler: RequestHandlerFactory) -> TCPServer:
    if endpoint.family == socket.AF_UNIX:
        _remove_stale_unix_socket(str(endpoint.address))
    try:
        return _server_class(endpoint, udp)(endpoint.address, handler)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BindError(
            exc.errno or errno.EINVAL, f"cannot listen on {endpoint}: {reason}"
        ) from exc
    except OverflowError as exc:
        raise BindError(errno.EINVAL, f"cannot listen on {endpoint}: {exc}") from exc


class ServerGroup:
    """Several servers, each serving in its own thread, stopped together.

    ``serve()`` blocks until ``stop()`` is called; then every server is shut down and closed,
    and their Unix socket files are removed. ``stop()`` only writes a byte to a socket, so it
    is safe from any thread and from a signal handler.
    """

    def __init__(self, servers: list[TCPServer], label: str) -> None:
        self.servers = servers
        self.label = label
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._stop_writer.setblocking(False)

    def stop(self) -> None:
        """Ask ``serve()`` to return; returns at once."""
        with contextlib.suppress(OSError):  # full or closed: a stop is pending or done
            self._stop_writer.send(b"\0")

    def serve(self) -> None:
        threads = [
            threading.Thread(target=server.serve_forever, name=f"serve {server!r}", daemon=True)
            for server in self.servers
        ]
        try:
            for thread in threads:
                thread.start()
            for server in self.servers:
                logger.info("serving %s on %s", self.label, _describe(server))
            self._stop_reader.recv(1)
            for server in self.servers:
                server.shutdown()
        finally:
            for server in self.servers:
                close_server(server)
            self._stop_reader.close()
            self._stop_writer.close()


def _describe(server: TCPServer) -> str:
    kind = "udp" if isinstance(server, UDPServer) else "tcp"
    if server.address_family == socket.AF_UNIX:
        kind = "unix"
    return f"{kind} {format_address(server.server_address)}"
