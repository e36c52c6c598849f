"""Listening endpoints: parsing ``HOST:PORT`` / ``[IPv6]:PORT`` / ``unix:PATH`` addresses,
formatting addresses for logs, and the policy for errors from ``accept()``."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass

from ._errors import ConfigError
from ._log import RateLimitedLog
from ._types import Address, ClientAddress

__all__ = ["ACCEPT_BACKOFF", "AcceptErrorPolicy", "Endpoint", "format_address", "parse_endpoint"]

#: How long to stop accepting after accept() ran out of a resource (file descriptors, kernel
#: memory): long enough for handlers to finish and free some, short enough to go unnoticed.
ACCEPT_BACKOFF = 0.1

#: accept() errors that mean "out of a resource": retrying at once would spin at full CPU.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: accept() errors that concern one connection only (reset or aborted before we took it), or
#: none at all (another process or thread accepted it first): ignore them and go on.
_PER_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.EPROTO,
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EPERM,
        errno.EINTR,
    }
)


class AcceptErrorPolicy:
    """Decides what an error from ``accept()`` (or ``recvfrom()``) costs: how long to pause.

    Running out of descriptors or memory pauses accepting for ``ACCEPT_BACKOFF`` seconds and
    is logged as a warning at most once a second; errors about a single connection are logged
    at debug level and cost nothing. The server keeps serving in every case.
    """

    def __init__(self) -> None:
        self._log = RateLimitedLog(interval=1.0)

    def backoff_after(self, exc: OSError, listener: object) -> float:
        """Log *exc* as the policy says and return the seconds to stop accepting (maybe 0)."""
        if exc.errno in _RESOURCE_ERRNOS:
            self._log.log(
                logging.WARNING,
                f"accept:{exc.errno}",
                "accept() on %s failed: %s; pausing accepts for %.0f ms",
                listener,
                exc,
                ACCEPT_BACKOFF * 1000,
            )
            return ACCEPT_BACKOFF
        level = logging.DEBUG if exc.errno in _PER_CONNECTION_ERRNOS else logging.WARNING
        self._log.log(level, f"accept:{exc.errno}", "accept() on %s failed: %s", listener, exc)
        return 0.0


@dataclass(frozen=True)
class Endpoint:
    """Where to listen: an address family and an address that ``bind()`` takes."""

    family: socket.AddressFamily
    address: Address

    def __str__(self) -> str:
        return format_address(self.address)


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (all interfaces) or ``unix:PATH``.

    A host name is resolved here, so a name that does not resolve is a ``ConfigError`` now
    rather than a failure later. Raises ``ConfigError`` naming what is wrong.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ConfigError(f"bad address {text!r}: unix: needs a path, as in unix:/run/app.sock")
        return Endpoint(socket.AF_UNIX, path)
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    port = _parse_port(text, port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"bad address {text!r}: put an IPv6 address in brackets, as [::1]:{port}")
    return Endpoint(_family_of(text, host), (host, port))


def _parse_port(text: str, port_text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f"bad address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad address {text!r}: port {port} is not in 0..65535")
    return port


def _family_of(text: str, host: str) -> socket.AddressFamily:
    if not host:
        return socket.AF_INET
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        pass  # a name: ask the resolver
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"bad address {text!r}: cannot resolve {host!r}: {exc}") from None
    return infos[0][0]


def format_address(address: ClientAddress) -> str:
    """``host:port``, ``[v6]:port`` or the path, for log lines and messages."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        return address.decode(errors="replace") or "(unnamed)"
    return str(address) or "(unnamed)"
