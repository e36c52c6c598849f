"""netserve: a production-grade, drop-in replacement for the standard ``socketserver``.

``import netserve as socketserver`` runs code written for the standard library unchanged;
everything public is re-exported here, from small private modules.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    BindError,
    ConfigError,
    HandlerImportError,
    IdleTimeoutError,
    NetserveError,
    ProtocolError,
)
from ._handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from ._server import BaseServer, TCPServer, UDPServer, UnixDatagramServer, UnixStreamServer
from ._version import __version__ as __version__
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
    ThreadPoolMixIn,
    ThreadPoolTCPServer,
    ThreadPoolUDPServer,
    ThreadPoolUnixDatagramServer,
    ThreadPoolUnixStreamServer,
)
from .config import Config
from .strategies import ForkPerRequest, ThreadPerRequest, ThreadPool

if TYPE_CHECKING:
    from ._runner import serve

__all__ = [
    "BaseRequestHandler",
    "BaseServer",
    "BindError",
    "Config",
    "ConfigError",
    "DatagramRequestHandler",
    "ForkPerRequest",
    "ForkingMixIn",
    "ForkingTCPServer",
    "ForkingUDPServer",
    "ForkingUnixDatagramServer",
    "ForkingUnixStreamServer",
    "HandlerImportError",
    "IdleTimeoutError",
    "NetserveError",
    "ProtocolError",
    "StreamRequestHandler",
    "TCPServer",
    "ThreadPerRequest",
    "ThreadPool",
    "ThreadPoolMixIn",
    "ThreadPoolTCPServer",
    "ThreadPoolUDPServer",
    "ThreadPoolUnixDatagramServer",
    "ThreadPoolUnixStreamServer",
    "ThreadingMixIn",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "ThreadingUnixDatagramServer",
    "ThreadingUnixStreamServer",
    "UDPServer",
    "UnixDatagramServer",
    "UnixStreamServer",
    "serve",
]


def __getattr__(name: str) -> Any:
    """``serve`` is imported on first use: it brings in asyncio and the event-loop server,
    which ``import netserve as socketserver`` should not pay for."""
    if name == "serve":
        from ._runner import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _present_as_netserve() -> None:
    """Make the re-exported names report ``netserve`` as their module (in reprs, tracebacks
    and pickles), as the standard library's names report ``socketserver``."""
    for name in __all__:
        obj = globals().get(name)
        if isinstance(obj, type) and obj.__module__.startswith("netserve."):
            obj.__module__ = __name__


_present_as_netserve()
