"""``AsyncServer``: serves one handler class on listening sockets with an event loop.

The loop holds every connection: a connection costs a transport and one handler object, no
thread and no timer. Limits are applied when a connection is made; the idle timeout is one
periodic sweep over the connections (each keeps a counter of sweeps without activity, which
the hot path resets with a single store); a graceful stop closes what is idle at once and
gives what is in flight up to ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from .._connections import _ip_of
from .._errors import BindError, ConfigError
from .._listeners import Endpoint, format_address, parse_endpoint
from .._log import RateLimitedLog, logger
from .._server import FORCED_CLOSE_GRACE
from .._types import Address
from ..config import DEFAULT_DRAIN_TIMEOUT, DEFAULT_THREADS, TRANSPORT_CHOICES
from ..strategies.pool import LoadShare
from ._connection import LINGER_TIMEOUT, Connection
from ._epoll import EpollHub, _Listener, epoll_available
from ._loop import loop_name, run
from ._messages import LengthPrefixedHandler, LineHandler, _MessageHandler
from ._stream import AsyncRequestHandler
from ._threads import BlockingPool, DaemonExecutor

__all__ = [
    "HEARTBEAT_INTERVAL",
    "IDLE_SWEEPS_PER_TIMEOUT",
    "LISTEN_BACKLOG",
    "LOOP_ERROR_INTERVAL",
    "MAX_SWEEP_INTERVAL",
    "POOL_JOIN_TIMEOUT",
    "AsyncServer",
    "Listen",
]

#: Listen backlog: room for a burst of connections between two turns of the loop (the
#: kernel caps it at net.core.somaxconn). The same as the threaded servers use.
LISTEN_BACKLOG: Final = 1024
#: How often the heartbeat callback runs: a pre-forked worker's ``notify()`` wants to be
#: called more often than its own heartbeat period (at most 1 s).
HEARTBEAT_INTERVAL: Final = 0.5
#: Idle sweeps per ``idle_timeout``: a silent client is closed between 1 and 1.25 times
#: ``idle_timeout`` after its last activity; more sweeps would be more exact but each one
#: visits every connection.
IDLE_SWEEPS_PER_TIMEOUT: Final = 4
#: The longest time between two idle sweeps, however long ``idle_timeout`` is, so that a
#: sweep never has a backlog of many minutes of connections to close at once.
MAX_SWEEP_INTERVAL: Final = 1.0
#: How long ``serve()`` waits, after the loop has stopped, for the threads of each of its
#: pools to end: the blocking handlers', and the loop's default executor (``to_thread``,
#: ``run_in_executor(None, ...)``). A thread stuck in a call is left behind (they are daemon
#: threads), so that a stop never waits for a call that may never return.
POOL_JOIN_TIMEOUT: Final = 1.0

#: The loop errors a loop made by ``serve()`` reports are logged at most once per this many
#: seconds per message, with a count of those held back.
LOOP_ERROR_INTERVAL: Final = 1.0

#: What the server can listen on: a socket (bound, listening or not; the server serves a
#: duplicate and never closes it), ``"HOST:PORT"`` / ``"[IPV6]:PORT"`` / ``"unix:PATH"``, or
#: a ``(host, port)`` tuple.
Listen = socket.socket | str | tuple[Any, ...]

_HANDLER_BASES: Final = (AsyncRequestHandler, LineHandler, LengthPrefixedHandler)


class _Listening(Protocol):
    """What the server keeps of a listener: an ``asyncio.Server`` or an epoll listener."""

    def close(self) -> None: ...


def _transport_kind(choice: str) -> str:
    """``"epoll"`` or ``"loop"`` for a ``transport=`` choice; ConfigError if unusable."""
    if choice not in TRANSPORT_CHOICES:
        raise ConfigError(
            f"transport: expected one of {', '.join(TRANSPORT_CHOICES)}, got {choice!r}"
        )
    if choice == "auto":
        return "epoll" if epoll_available() else "loop"
    if choice == "epoll" and not epoll_available():
        raise ConfigError("transport: epoll is not available on this platform; use 'loop'")
    return choice


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class AsyncServer:
    """Serve *handler* (a subclass of ``AsyncRequestHandler``, ``LineHandler`` or
    ``LengthPrefixedHandler``) on every address or socket in *listen*.

    Options:

    - *max_connections*, *max_connections_per_ip*: connections over a limit are closed at
      once, counted in ``refused`` (by reason) and logged at most once a second per reason.
    - *busy_message*: written to a refused client before its connection is closed (as the
      sync servers' ``busy_message``); what the client has not taken after
      ``LINGER_TIMEOUT`` is dropped. Empty, the default: nothing is written.
    - *idle_timeout*: a connection waiting for its client (for a request, or for it to read
      what was written) that long is closed, with a log line. A client still reading a
      large reply is not idle as long as the server can see it read: the bytes waiting
      for it must go down within each ``idle_timeout``. Its kernel lets them go in steps of
      a segment or so (a few KB on a network, up to 64 KiB on loopback), so a client that
      reads less than that per ``idle_timeout`` is closed.
    - *drain_timeout*: how long a graceful stop lets requests in flight finish.
    - *threads*: the pool that runs ``blocking = True`` message handlers (started only for
      them).
    - *heartbeat*: called every *heartbeat_interval* seconds from the loop while the server
      runs (and drains); a pre-forked worker passes ``worker.notify``. Its errors are logged.
    - *on_request*: called from the loop once per connection, when it is done (closed, and
      its handler finished); a pre-forked worker passes ``worker.count_request``, which
      recycles the worker after ``max_requests``. Its errors are logged.
    - *share*: a pre-forked worker's ``worker.balance``: told of each connection, and (with
      epoll transports) asked before each accept, so that the workers hold about as many
      connections each.
    - *transport*: ``"epoll"``, netserve's own transports on one epoll set that the loop
      watches (Linux; faster, and about a fifth of the memory per connection); ``"loop"``,
      the event loop's own (``loop.create_server``); ``"auto"`` (the default): epoll where
      the platform has it. Handlers behave the same on both; ``transport`` holds the choice.

    Run it with ``serve()`` (blocking, on a new loop), or ``await serve_forever()`` on a
    running loop; ``start()`` alone binds and starts accepting. Stop it with ``await
    shutdown()``, or ``request_stop()`` from any thread or a signal handler. Sockets the
    server opened are closed when it stops (Unix socket files removed); sockets passed in
    are not closed (the server serves duplicates of them).
    """

    def __init__(
        self,
        handler: type[AsyncRequestHandler | LineHandler | LengthPrefixedHandler],
        listen: Iterable[Listen],
        *,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        idle_timeout: float | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        busy_message: bytes = b"",
        threads: int = DEFAULT_THREADS,
        backlog: int = LISTEN_BACKLOG,
        heartbeat: Callable[[], object] | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        on_request: Callable[[], object] | None = None,
        share: LoadShare | None = None,
        transport: str = "auto",
    ) -> None:
        if not (isinstance(handler, type) and issubclass(handler, _HANDLER_BASES)):
            raise ConfigError(
                f"handler: expected a subclass of AsyncRequestHandler, LineHandler or "
                f"LengthPrefixedHandler, got {handler!r}"
            )
        for name, value, low in (
            ("max_connections", max_connections, 1),
            ("max_connections_per_ip", max_connections_per_ip, 1),
            ("threads", threads, 1),
            ("backlog", backlog, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{name}: must be at least {low}, got {value}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ConfigError(f"idle_timeout: must be more than 0, got {idle_timeout}")
        if not drain_timeout >= 0:
            raise ConfigError(f"drain_timeout: must be 0 or more, got {drain_timeout}")
        if not heartbeat_interval > 0:
            raise ConfigError(f"heartbeat_interval: must be more than 0, got {heartbeat_interval}")
        #: Whose transports serve the connections: "epoll" or "loop" ("auto" resolved).
        self.transport = _transport_kind(transport)
        self.handler = handler
        self.listen = list(listen)
        if not self.listen:
            raise ConfigError("listen: give at least one address or socket")
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.busy_message = bytes(busy_message)
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.threads = threads
        self.backlog = backlog
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.on_request = on_request
        self.share = share
        #: Connections refused, by reason: "max_connections", "max_connections_per_ip",
        #: "stopping" (made while the server was stopping).
        self.refused: Counter[str] = Counter()
        self._log = RateLimitedLog(interval=1.0)
        self._loop_errors_at: dict[str, float] = {}  # for _loop_error's rate limit
        self._loop_errors_held: dict[str, int] = {}
        self._connections: dict[int, Connection] = {}  # id -> connection, until it is done
        self._per_ip: dict[str, int] = {}
        self._servers: list[_Listening] = []
        self._hub: EpollHub | None = None  # with epoll transports, once started
        self._addresses: list[Address] = []  # what the sockets were bound to
        self._unix_paths: list[str] = []  # socket files this server made, removed on stop
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_sweep = self._next_heartbeat = 0.0
        # id -> bytes not yet sent to its client when its idle period began, if any
        self._unsent_at_idle: dict[int, int] = {}
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None  # wakes a drain wait early
        # Written by request_stop() from any thread or a signal handler: plain assignments.
        self._stop_requested = False
        self._fast_stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Read by the connections (hence the prefix); _ns_loop is set by start().
        self._ns_loop: asyncio.AbstractEventLoop
        self._ns_pool: BlockingPool | None = None
        self._ns_stopping = False

    # -- what callers see ---------------------------------------------------------------------

    @property
    def addresses(self) -> list[Address]:
        """The addresses listened on (with the ports the kernel chose for port 0), once
        started (and still after the server stopped)."""
        return list(self._addresses)

    @property
    def connections(self) -> int:
        """Connections open now (a blocking handler's ``finish()`` still counts)."""
        return len(self._connections)

    @property
    def stopping(self) -> bool:
        """True once a stop has begun: the server no longer accepts."""
        return self._ns_stopping

    def __repr__(self) -> str:
        where = ", ".join(format_address(a) for a in self.addresses) or "not started"
        return f"<AsyncServer {self.handler.__qualname__} on {where}>"

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind (or take) the listening sockets and start accepting, on the running loop.

        Raises ``BindError`` naming an address that cannot be bound (nothing is left open),
        ``ConfigError`` for a bad address, RuntimeError if already started.
        """
        if self._loop is not None:
            raise RuntimeError("this server was already started")
        loop = asyncio.get_running_loop()
        sockets: list[socket.socket] = []
        try:
            for spec in self.listen:
                sockets.append(self._listening_socket(spec))
            if issubclass(self.handler, _MessageHandler) and self.handler.blocking:
                self._ns_pool = BlockingPool(self.threads)
            self._loop = self._ns_loop = loop
            factory = functools.partial(self.handler, self)
            if self.transport == "epoll":
                hub = self._hub = EpollHub(loop)
                for sock in sockets:
                    sock.listen(self.backlog)
                    self._addresses.append(sock.getsockname())
                    self._servers.append(hub.listen(sock, factory, self.share))
            else:
                for sock in sockets:
                    server = await loop.create_server(factory, sock=sock, backlog=self.backlog)
                    self._servers.append(server)
                    self._addresses.append(sock.getsockname())
        except BaseException:
            self._close_listeners()
            self._close_hub()
            self._addresses.clear()
            for sock in sockets:
                sock.close()
            if self._ns_pool is not None:
                self._ns_pool.close()
            self._loop = None
            raise
        self._stopped = loop.create_future()
        now = loop.time()
        self._next_sweep = now + self._sweep_interval()
        self._next_heartbeat = now
        self._tick()
        # debug: whoever runs the server announces it (the CLI logs its own serving lines)
        logger.debug(
            "serving %s on %s with %s%s",
            self.handler.__qualname__,
            ", ".join(format_address(address) for address in self.addresses),
            loop_name(loop),
            f" and {self.threads} threads for blocking handlers" if self._ns_pool else "",
        )
        if self._stop_requested:
            self._on_stop_request()

    async def serve_forever(self, on_ready: Callable[[], object] | None = None) -> None:
        """Start (unless started) and serve until stopped; then return, after the stop has
        finished. *on_ready* is called once the server accepts (a pre-forked worker passes
        ``worker.ready``). If this coroutine is cancelled, the server stops fast first."""
        if self._loop is None:
            await self.start()
        assert self._stopped is not None
        if on_ready is not None:
            on_ready()
        try:
            await asyncio.shield(self._stopped)
        except asyncio.CancelledError:
            await self.shutdown(drain_timeout=0)
            raise

    def serve(self, loop: str = "auto", on_ready: Callable[[], object] | None = None) -> None:
        """Serve on a new event loop (``"auto"``, ``"uvloop"`` or ``"asyncio"``) until
        stopped, then close the loop. Blocks; stop it with ``request_stop()``.

        The loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``)
        is a ``DaemonExecutor``: once stopped, this waits at most ``POOL_JOIN_TIMEOUT``
        seconds for the calls still running in it (and as long for blocking handlers), then
        returns with a warning, leaving them to their daemon threads."""
        try:
            run(self._serve_on_own_loop(on_ready), loop)
        finally:
            if self._ns_pool is not None:
                self._ns_pool.close()
                if not self._ns_pool.join(POOL_JOIN_TIMEOUT):
                    logger.warning("threads still busy in blocking handlers are left behind")

    async def _serve_on_own_loop(self, on_ready: Callable[[], object] | None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        loop.set_default_executor(DaemonExecutor(POOL_JOIN_TIMEOUT))
        await self.serve_forever(on_ready)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The exception handler of a loop ``serve()`` made: the loop's own errors, at most
        once a second per message. asyncio's selector loop reports ``accept()`` running out
        of file descriptors once per attempt, which is thousands of tracebacks a second."""
        message = str(context.get("message") or "unhandled error in the event loop")
        now = time.monotonic()
        last = self._loop_errors_at.get(message)
        if last is not None and now - last < LOOP_ERROR_INTERVAL:
            self._loop_errors_held[message] = self._loop_errors_held.get(message, 0) + 1
            return
        self._loop_errors_at[message] = now
        held = self._loop_errors_held.pop(message, 0)
        if held:
            context = {**context, "message": f"{message} ({held} similar messages suppressed)"}
        loop.default_exception_handler(context)

    # -- stopping -----------------------------------------------------------------------------

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop, and return once stopped.

        Accepting stops at once. Then, unless *drain_timeout* is 0 (a fast stop): message
        connections with nothing in flight are closed, and a message being handled finishes
        and its reply is sent before its connection closes; ``AsyncRequestHandler`` reads
        that would wait for the client with nothing buffered see end-of-input. Whatever is
        still open after *drain_timeout* seconds (default: the server's) is closed, with a
        log line each, and its handler task cancelled. A second call waits for the first
        stop; a call with 0 turns a graceful stop in progress into a fast one. Do not await
        this from a handler (it waits for that handler): call ``request_stop()``.
        """
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        if not timeout >= 0:
            raise ConfigError(f"drain_timeout: must be 0 or more, got {drain_timeout}")
        if self._loop is None:
            self._stop_requested = True  # never started: start() will stop at once
            return
        task = self._begin_stop(timeout)
        await asyncio.shield(task)

    def request_stop(self, graceful: bool = True) -> None:
        """Ask the server to stop, from any thread or a signal handler; returns at once.

        Graceful: as ``shutdown()`` with the server's ``drain_timeout``; not graceful: as
        ``shutdown(0)``, which also cuts short a graceful stop in progress. Before
        ``start()``, the server stops as soon as it starts. Only plain assignments and
        ``loop.call_soon_threadsafe`` happen here.
        """
        if not graceful:
            self._fast_stop_requested = True
        self._stop_requested = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: already stopped
                loop.call_soon_threadsafe(self._on_stop_request)

    def _on_stop_request(self) -> None:
        self._begin_stop(0.0 if self._fast_stop_requested else self.drain_timeout)

    def _begin_stop(self, drain_timeout: float) -> asyncio.Task[None]:
        if drain_timeout == 0:
            self._fast_stop_requested = True
            _resolve(self._wakeup)
        if self._stop_task is None:
            assert self._loop is not None
            self._stop_task = self._loop.create_task(self._stop(drain_timeout))
        return self._stop_task

    async def _stop(self, drain_timeout: float) -> None:
        self._ns_stopping = True
        self._close_listeners()
        graceful = drain_timeout > 0 and not self._fast_stop_requested
        logger.info(
            "stopping %s: %d connections open",
            f"gracefully (drain timeout {drain_timeout:g} s)" if graceful else "now",
            len(self._connections),
        )
        try:
            if graceful:
                for connection in list(self._connections.values()):
                    connection._ns_begin_stop()
                await self._wait_for_connections(drain_timeout)
            self._close_remaining(drain_timeout)
            await self._wait_for_connections(FORCED_CLOSE_GRACE, even_if_fast=True)
            if self._connections:
                logger.warning(
                    "%d connections still not done %.0f s after being closed "
                    "(handlers stuck in threads?); giving up on them",
                    len(self._connections),
                    FORCED_CLOSE_GRACE,
                )
                self._connections.clear()
                self._per_ip.clear()
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
                self._tick_handle = None
            if self._ns_pool is not None:
                self._ns_pool.close()
            self._close_hub()
            logger.debug("stopped serving %s", self.handler.__qualname__)
            _resolve(self._stopped)

    def _close_remaining(self, drain_timeout: float) -> None:
        """Close every connection still open, now."""
        remaining = list(self._connections.values())
        if not remaining:
            return
        if drain_timeout > 0 and not self._fast_stop_requested:
            for connection in remaining:
                connection._ns_log_closing(
                    logging.WARNING, f"still busy after the {drain_timeout:g} s drain timeout"
                )
        else:
            logger.info("fast stop: closing %d connections", len(remaining))
        for connection in remaining:
            connection._ns_force_stop()

    async def _wait_for_connections(self, timeout: float, even_if_fast: bool = False) -> None:
        """Wait until no connection is left or *timeout* passes (or, unless *even_if_fast*,
        a fast stop is requested)."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + timeout
        while self._connections and (even_if_fast or not self._fast_stop_requested):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            waiter = self._wakeup = loop.create_future()
            timer = loop.call_later(remaining, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._wakeup = None

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._unix_paths.clear()

    def _close_hub(self) -> None:
        if self._hub is not None:
            self._hub.close()
            self._hub = None

    # -- listening sockets ----------------------------------------------------------------------

    def _listening_socket(self, spec: Listen) -> socket.socket:
        """A socket to give the loop: a duplicate of a socket passed in, or a new one."""
        if isinstance(spec, socket.socket):
            if spec.type != socket.SOCK_STREAM:
                raise ConfigError(f"listen: expected a stream socket, got {spec!r}")
            return spec.dup()
        if isinstance(spec, str):
            endpoint = parse_endpoint(spec)
        elif isinstance(spec, tuple):
            host = str(spec[0])
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            endpoint = Endpoint(family, spec)
        else:
            raise ConfigError(f"listen: expected a socket, an address or a tuple, got {spec!r}")
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        try:
            if endpoint.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(endpoint.address)
            sock.listen(self.backlog)
        except (OSError, OverflowError) as exc:
            sock.close()
            code = getattr(exc, "errno", None) or 22  # EINVAL
            reason = getattr(exc, "strerror", None) or str(exc)
            raise BindError(code, f"cannot listen on {endpoint}: {reason}") from exc
        if endpoint.family == socket.AF_UNIX:
            self._unix_paths.append(str(endpoint.address))
        return sock

    # -- connections (called by them) -----------------------------------------------------------

    def _ns_admit(self, connection: Connection) -> str | None:
        """Count *connection* in, or return why it is refused."""
        if self._ns_stopping:
            return "stopping"
        connections = self._connections
        if self.max_connections is not None and len(connections) >= self.max_connections:
            return "max_connections"
        if self.max_connections_per_ip is not None:
            ip = _ip_of(connection.client_address)
            if ip is not None:
                count = self._per_ip.get(ip, 0)
                if count >= self.max_connections_per_ip:
                    return "max_connections_per_ip"
                self._per_ip[ip] = count + 1
                connection._ns_ip = ip
        connections[id(connection)] = connection
        if self.share is not None:
            self.share.opened()
            if self.max_connections is not None and len(connections) >= self.max_connections:
                self.share.set_room(id(connections), False)  # the next is another worker's
        return None

    def _ns_refuse(self, connection: Connection, reason: str) -> None:
        self.refused[reason] += 1
        self._log.log(
            logging.WARNING,
            reason,
            "refused connection from %s: %s (%d refused so far)",
            format_address(connection.client_address),
            reason,
            self.refused[reason],
        )
        transport = connection._ns_transport
        if self.busy_message:
            transport.write(self.busy_message)
            if transport.get_write_buffer_size():  # the close waits for it: not for ever
                self._ns_loop.call_later(LINGER_TIMEOUT, transport.abort)
        transport.close()

    def _ns_forget(self, connection: Connection) -> None:
        """*connection* is done (closed, and its handler finished): count it out."""
        if self._connections.pop(id(connection), None) is None:
            return
        if self._unsent_at_idle:
            self._unsent_at_idle.pop(id(connection), None)
        if self.share is not None:
            self.share.closed()
            if self.max_connections is not None and len(self._connections) < self.max_connections:
                self.share.set_room(id(self._connections), True)
            for listener in self._servers:
                if isinstance(listener, _Listener):
                    listener.share_changed()
        if logger.isEnabledFor(logging.INFO):  # one line per connection, as the threads log
            logger.info("%s closed", format_address(connection.client_address))
        ip = connection._ns_ip
        if ip is not None:
            count = self._per_ip.get(ip, 0) - 1
            if count > 0:
                self._per_ip[ip] = count
            else:
                self._per_ip.pop(ip, None)
        if self.on_request is not None:
            try:
                self.on_request()
            except Exception as exc:
                self._log.log(
                    logging.ERROR, "on_request", "the on_request callback failed: %r", exc
                )
        if not self._connections:
            _resolve(self._wakeup)

    # -- the periodic tick: idle sweep and heartbeat -------------------------------------------

    def _sweep_interval(self) -> float:
        if self.idle_timeout is None:
            return math.inf
        return min(self.idle_timeout / IDLE_SWEEPS_PER_TIMEOUT, MAX_SWEEP_INTERVAL)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if now >= self._next_sweep:
            self._sweep()
            self._next_sweep = now + self._sweep_interval()
        if self.heartbeat is not None and now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            try:
                self.heartbeat()
            except Exception as exc:
                self._log.log(logging.ERROR, "heartbeat", "the heartbeat callback failed: %r", exc)
        next_tick = min(self._next_sweep, self._next_heartbeat if self.heartbeat else math.inf)
        if next_tick < math.inf:
            self._tick_handle = loop.call_at(next_tick, self._tick)

    def _sweep(self) -> None:
        """Close the connections that have waited for their client for idle_timeout.

        A client reading what was written to it is not idle: the bytes not yet sent to it
        are noted when its connection's idle period begins (one system call), and if there
        are fewer when it would be closed, a new idle period begins instead."""
        assert self.idle_timeout is not None
        interval = self._sweep_interval()
        # a connection idle since just after a sweep is seen idle by `limit` sweeps once it
        # has been idle for (limit - 1) intervals: so close at limit = timeout / interval + 1
        limit = math.ceil(self.idle_timeout / interval - 1e-9) + 1
        for key, connection in list(self._connections.items()):
            if not connection._ns_waiting_for_client():
                connection._ns_idle = 0
                continue
            idle = connection._ns_idle + 1
            if idle == 1:
                self._note_unsent(key, connection._ns_unsent())
            elif idle == limit and self._renew_if_read(key, connection):
                idle = 1
            connection._ns_idle = idle
            if idle == limit:
                logger.info(
                    "closed connection from %s: idle for %.1f s",
                    format_address(connection.client_address),
                    self.idle_timeout,
                )
                connection._ns_abort()

    def _note_unsent(self, key: int, unsent: int) -> None:
        if unsent:
            self._unsent_at_idle[key] = unsent
        else:
            self._unsent_at_idle.pop(key, None)

    def _renew_if_read(self, key: int, connection: Connection) -> bool:
        """If fewer bytes wait to be sent to the client of *connection* than when its idle
        period began (it reads slowly, it has not gone), note how many and return True: a
        new idle period begins."""
        before = self._unsent_at_idle.get(key, 0)
        if not before:
            return False
        unsent = connection._ns_unsent()
        if unsent >= before:
            return False
        self._note_unsent(key, unsent)
        return True
