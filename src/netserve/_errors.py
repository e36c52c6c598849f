"""The one exception tree of netserve.

Every error netserve raises on purpose derives from :class:`NetserveError`, so callers can catch
the whole family at once; where a stdlib-compatible API has always raised a builtin (``OSError``
from ``bind()``, say) it keeps doing so, and the netserve error also derives from that builtin.
"""

from __future__ import annotations

__all__ = [
    "BindError",
    "ConfigError",
    "HandlerImportError",
    "IdleTimeoutError",
    "NetserveError",
    "ProtocolError",
]


class NetserveError(Exception):
    """Base class of every error netserve raises on purpose."""


class ConfigError(NetserveError, ValueError):
    """An option or an address is invalid; the message names it and says why."""


class BindError(NetserveError, OSError):
    """A listening socket could not be opened (port busy, address not available, no permission).

    Made as ``BindError(errno, message)``; ``str()`` is the message alone, without the
    ``[Errno N]`` prefix of ``OSError``, and ``errno`` is kept for callers.
    """

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class HandlerImportError(NetserveError, ImportError):
    """``MODULE:HANDLER`` could not be imported, or does not name a request handler class."""


class ProtocolError(NetserveError):
    """A peer sent bytes that break the protocol (a garbled or oversized frame, a bad header)."""


class IdleTimeoutError(NetserveError, TimeoutError):
    """A client sent nothing, or took nothing of what was sent to it, for the server's
    ``idle_timeout``. Raised by the reads and writes of a connection's socket (so, of a
    stream handler's ``rfile`` and ``wfile`` too); the server then closes the connection with
    a log line, without calling ``handle_error()``. A ``TimeoutError`` (``socket.timeout``)."""
