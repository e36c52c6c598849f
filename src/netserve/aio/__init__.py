"""netserve.aio: an event-loop server (uvloop when installed) for 10,000+ connections per
process, reusing netserve's framing (``netserve.proto``), limits and logging.

Three kinds of handler, one instance per connection::

    class Reverse(netserve.aio.LineHandler):          # a method per message; the reply is
        def handle_line(self, line):                  # its return value
            return line[::-1]

    class Lookup(netserve.aio.LineHandler):
        blocking = True                               # runs in the server's thread pool
        def handle_line(self, line):
            return database.get(line)

    class Echo(netserve.aio.AsyncRequestHandler):     # a coroutine per connection
        async def handle(self):
            while line := await self.readline():
                self.write(line)

    netserve.aio.AsyncServer(Reverse, ["127.0.0.1:9999"], max_connections=20000).serve()
"""

from ._connection import LINGER_TIMEOUT, WRITE_HIGH_WATER, WRITE_LOW_WATER
from ._loop import LOOP_CHOICES, loop_name, new_event_loop, run
from ._messages import (
    MAX_FRAME,
    MAX_QUEUED_BYTES,
    MAX_QUEUED_MESSAGES,
    LengthPrefixedHandler,
    LineHandler,
)
from ._server import (
    HEARTBEAT_INTERVAL,
    IDLE_SWEEPS_PER_TIMEOUT,
    LISTEN_BACKLOG,
    LOOP_ERROR_INTERVAL,
    MAX_SWEEP_INTERVAL,
    POOL_JOIN_TIMEOUT,
    AsyncServer,
    Listen,
)
from ._stream import READ_BUFFER_LIMIT, READ_SIZE, AsyncRequestHandler

__all__ = [
    "HEARTBEAT_INTERVAL",
    "IDLE_SWEEPS_PER_TIMEOUT",
    "LINGER_TIMEOUT",
    "LISTEN_BACKLOG",
    "LOOP_CHOICES",
    "LOOP_ERROR_INTERVAL",
    "MAX_FRAME",
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_MESSAGES",
    "MAX_SWEEP_INTERVAL",
    "POOL_JOIN_TIMEOUT",
    "READ_BUFFER_LIMIT",
    "READ_SIZE",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "AsyncRequestHandler",
    "AsyncServer",
    "LengthPrefixedHandler",
    "LineHandler",
    "Listen",
    "loop_name",
    "new_event_loop",
    "run",
]


def _present_as_netserve_aio() -> None:
    """Make the re-exported classes report ``netserve.aio`` as their module (in reprs,
    tracebacks and pickles)."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("netserve.aio."):
            obj.__module__ = __name__


_present_as_netserve_aio()
