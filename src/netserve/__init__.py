"""netserve: a production-grade, drop-in replacement for the standard ``socketserver``.

``import netserve as socketserver`` runs code written for the standard library unchanged;
everything public is re-exported here, from small private modules.
"""

from ._errors import BindError, ConfigError, HandlerImportError, NetserveError, ProtocolError
from ._handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from ._server import BaseServer, TCPServer, UDPServer, UnixDatagramServer, UnixStreamServer
from .compat import (
    ForkingMixIn,
    ForkingTCPServer,
    ForkingUDPServer,
    ForkingUnixDatagramServer,
    ForkingUnixStreamServer,
    ThreadingMixIn,
    ThreadingTCPServer,
    ThreadingUDPServer,
    ThreadingUnixDatagramServer,
    ThreadingUnixStreamServer,
)
from .config import Config

__version__ = "0.1.0"

__all__ = [
    "BaseRequestHandler",
    "BaseServer",
    "BindError",
    "Config",
    "ConfigError",
    "DatagramRequestHandler",
    "ForkingMixIn",
    "ForkingTCPServer",
    "ForkingUDPServer",
    "ForkingUnixDatagramServer",
    "ForkingUnixStreamServer",
    "HandlerImportError",
    "NetserveError",
    "ProtocolError",
    "StreamRequestHandler",
    "TCPServer",
    "ThreadingMixIn",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "ThreadingUnixDatagramServer",
    "ThreadingUnixStreamServer",
    "UDPServer",
    "UnixDatagramServer",
    "UnixStreamServer",
]


def _present_as_netserve() -> None:
    """Make the re-exported names report ``netserve`` as their module (in reprs, tracebacks
    and pickles), as the standard library's names report ``socketserver``."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("netserve."):
            obj.__module__ = __name__


_present_as_netserve()
