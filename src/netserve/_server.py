"""The server core: the standard library's template methods over a selector loop.

``serve_forever()`` waits on the listening socket and on a wakeup socket pair, so
``shutdown()`` stops it at once, whatever ``poll_interval`` is; ``poll_interval`` only sets how
often ``service_actions()`` runs when nothing happens. Errors from ``accept()`` follow
``AcceptErrorPolicy``: running out of descriptors pauses accepting briefly instead of spinning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Self

from ._connections import ConnectionRegistry, IdleTimeoutSocket
from ._errors import ConfigError, IdleTimeoutError
from ._listeners import ACCEPT_BACKOFF, AcceptErrorPolicy, format_address
from ._log import RateLimitedLog, logger
from ._types import Address, ClientAddress, RequestHandlerFactory
from .config import MAX_TIMEOUT
from .strategies import ConcurrencyStrategy, ThreadPool

__all__ = ["BaseServer", "TCPServer", "UDPServer", "UnixDatagramServer", "UnixStreamServer"]

_Socket = socket.socket  # servers have an attribute named ``socket``

#: After a drain timeout the server shuts the remaining connections; handlers blocked on them
#: then fail at once, so this is only how long to wait for them to notice.
FORCED_CLOSE_GRACE = 2.0

#: A stopping server refuses at most this many connections from its listen backlog: the
#: kernel's backlog is bounded (somaxconn), so this only guards against a client flood.
MAX_REFUSED_ON_STOP = 65536
#: Connections a serve loop takes per wakeup at most, from a non-blocking listener: a burst
#: costs one select() per batch, and the wakeup socket (shutdown) is looked at in between.
ACCEPT_BATCH = 16

if hasattr(selectors, "PollSelector"):
    _ServerSelector: type[selectors.BaseSelector] = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector


class _LoopControl:
    """Start and stop of ``serve_forever()``: a stop flag, a wakeup pair, a "stopped" event.

    The wakeup pair exists only while the loop runs. ``request_stop()`` and ``wake()`` take
    no lock (they may run in a signal handler): they set the flag and write one byte, which
    ends the loop's ``select()`` at once.
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
        self._stop_requested = True
        self.wake()

    def wake(self) -> None:
        """Make the loop's current ``select()`` return (no-op when the loop is not running)."""
        wakeup = self._wakeup
        if wakeup is not None:
            with contextlib.suppress(OSError):  # full (a wakeup is pending) or closed (ended)
                wakeup[1].send(b"\0")


class BaseServer:
    """Base class of servers: the request loop and the hooks it calls.

    The hooks keep the standard library's names and order: ``get_request``,
    ``verify_request``, ``process_request``, ``finish_request``, ``shutdown_request``,
    ``close_request``, ``handle_error``, ``handle_timeout``, ``service_actions``.

    Beyond the standard library, each of these is a class attribute that the keyword of the
    same name overrides for one server (None: no limit):

    - *concurrency*: a strategy from ``netserve.strategies`` (e.g. ``ThreadPool(32)``) that
      runs the requests; None runs them inline, one at a time, as ``TCPServer`` always did.
    - *max_connections*, *max_connections_per_ip*: connections open at once, in all and from
      one IP address; more are closed at once (after ``busy_message``), counted in
      ``refused`` and logged at most once a second per reason. ``verify_request()`` is asked
      only about connections within the limits.
    - *idle_timeout*: seconds a connection may go without the client sending (or reading)
      anything before it is closed, with a log line rather than a traceback (for a request
      that is a plain socket, which raises ``IdleTimeoutError`` then; a request of another
      kind, a TLS socket from a ``get_request()`` override, raises a plain ``TimeoutError``,
      which goes to ``handle_error()``: it cannot be told from another timeout).
    - *drain_timeout*: how long ``server_close()`` lets requests in flight finish before it
      closes their connections (None: wait as long as they take).
    """

    timeout: float | None = None
    socket: _Socket  # set by TCPServer and the subclasses that own a socket
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    idle_timeout: float | None = None
    drain_timeout: float | None = None
    block_on_close: bool = True
    #: Sent, if not empty, to a client refused for a limit or a full pool, before closing.
    busy_message: bytes = b""

    def __init__(
        self,
        server_address: Address,
        RequestHandlerClass: RequestHandlerFactory,
        *,
        concurrency: ConcurrencyStrategy | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        idle_timeout: float | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        for name, value in (
            ("max_connections", max_connections),
            ("max_connections_per_ip", max_connections_per_ip),
            ("idle_timeout", idle_timeout),
            ("drain_timeout", drain_timeout),
        ):
            if value is not None:
                setattr(self, name, value)
        _check_options(self)
        self._loop_control = _LoopControl()
        self._accept_policy = AcceptErrorPolicy()
        self._accept_paused_until = 0.0
        self._refusal_log = RateLimitedLog(interval=1.0)
        #: How many connections were refused, by reason ("max_connections", "busy", ...).
        self.refused: Counter[str] = Counter()
        self._connections = ConnectionRegistry(self.max_connections, self.max_connections_per_ip)
        self._concurrency = concurrency if concurrency is not None else self._make_concurrency()
        self._concurrency_closed = False
        #: Connections shut by a drain timeout: errors their handlers then hit are expected.
        self._shut_by_server: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._serving_here = threading.local()  # .request: the one this thread serves now
        #: ``(request, client_address)`` while ``serve_forever()`` serves one inline.
        self._inline_request: tuple[Any, ClientAddress] | None = None
        self._limit_room = True  # what _tell_share_of_limit last published
        self._limit_room_lock = threading.Lock()
        if self._concurrency is not None:
            self._concurrency.on_capacity(self._loop_control.wake)

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
                selector.register(wakeup, selectors.EVENT_READ)
                accepting = backing_off = False
                while not control.stop_requested:
                    if self._listener_closed():  # server_close() from a handler, say
                        logger.info("the listening socket was closed: serve_forever() returns")
                        break
                    pause = self._accept_paused_until - time.monotonic()
                    if (pause > 0) != backing_off:
                        backing_off = pause > 0
                        self._tell_share(room=not backing_off)
                    can_accept = pause <= 0 and self._has_capacity()
                    if can_accept != accepting:
                        accepting = can_accept
                        if accepting:
                            selector.register(self, selectors.EVENT_READ)
                        else:
                            selector.unregister(self)
                    timeout = poll_interval if pause <= 0 else _min_timeout(poll_interval, pause)
                    if not accepting and self._concurrency is not None:
                        timeout = _min_timeout(timeout, self._concurrency.recheck_after())
                    ready = selector.select(timeout)
                    if control.stop_requested:
                        break
                    for key, _ in ready:
                        if key.fileobj is self:
                            self._accept_batch(control)
                        else:
                            _drain_wakeups(wakeup)
                    self.service_actions()
        finally:
            control.end()

    def _tell_share(self, room: bool) -> None:
        """In a pre-forked worker: tell the load board whether this server can accept
        (not while it backs off after accept errors), so the others do not wait for it."""
        if isinstance(self._concurrency, ThreadPool) and self._concurrency.share is not None:
            self._concurrency.share.set_room(id(self), room)

    def _tell_share_of_limit(self) -> None:
        """In a pre-forked worker: whether ``max_connections`` leaves room for one more, so
        that the load board sends the next connection to a worker that can serve it. The
        count is read and published under one lock: the last to publish saw the latest."""
        strategy = self._concurrency
        if not isinstance(strategy, ThreadPool) or strategy.share is None:
            return
        registry = self._connections
        with self._limit_room_lock:
            max_total = registry.max_total
            room = max_total is None or len(registry) < max_total
            if room != self._limit_room:
                self._limit_room = room
                strategy.share.set_room(id(registry), room)

    def _has_capacity(self) -> bool:
        return self._concurrency is None or self._concurrency.has_capacity()

    def shutdown(self, *, drain_timeout: float | None = None) -> None:
        """Stop ``serve_forever()`` and wait until it has returned.

        Called from the thread that runs ``serve_forever()`` (from a handler of a server that
        serves inline), it only asks the loop to stop and returns, instead of deadlocking.
        With *drain_timeout* the stop is graceful: requests in flight get up to
        *drain_timeout* seconds (``math.inf``: no limit) to finish before the connections
        of those still running are closed (each with a log line); meanwhile the connections
        waiting in the listen backlog, and those made during the drain, are taken and
        refused (reason "stopping": ``busy_message``, a log line). The listening socket
        stays open, as after a plain ``shutdown()``. Called from a handler that this server
        runs in a thread, it starts the drain in a thread of its own and returns: waiting
        would wait for the caller.
        """
        control = self._loop_control
        control.request_stop()
        if control.serving_thread != threading.get_ident():
            self._wait_stopped(drain_timeout)
        if drain_timeout is None:
            return
        if self._request_served_here() is not None:
            threading.Thread(
                target=self._drain, args=(drain_timeout,), name="netserve drain"
            ).start()
            return
        self._drain(drain_timeout)

    def _wait_stopped(self, drain_timeout: float | None) -> None:
        """Wait until ``serve_forever()`` has returned. The loop may be held by a request
        it serves inline (a server without a strategy), or by a forking server's wait for
        a child to exit (``max_children``): with *drain_timeout*, once that has passed, the
        connections in flight are shut, so that their requests end and the loop with them.
        A *drain_timeout* past ``MAX_TIMEOUT`` (``math.inf``: no limit) waits as long as it
        takes: a wait that long would overflow."""
        stopped = self._loop_control.stopped
        if (
            drain_timeout is not None
            and drain_timeout <= MAX_TIMEOUT
            and not stopped.wait(drain_timeout)
        ):
            self._shut_in_flight(drain_timeout)
        stopped.wait()

    def _shut_in_flight(self, waited: float) -> None:
        """Shut the connections of the requests still running after a drain timeout, with a
        log line each: their handlers' reads and writes then end or fail, which is expected.
        Not the one this thread serves (a handler closing its server: its client stays)."""
        in_flight = {id(conn): (conn, address) for conn, address in self._connections.snapshot()}
        inline = self._inline_request
        if inline is not None and isinstance(inline[0], socket.socket):
            in_flight.setdefault(id(inline[0]), inline)
        own = self._request_served_here()
        for conn, client_address in in_flight.values():
            if conn is own:
                continue
            logger.warning(
                "closing connection from %s: still open %.1f s after the server began to stop",
                format_address(client_address),
                waited,
            )
            self._shut_by_server.add(conn)
            with contextlib.suppress(OSError):  # closed meanwhile: the request ended
                conn.shutdown(socket.SHUT_RDWR)

    def _drain(self, drain_timeout: float) -> None:
        """The graceful part of ``shutdown(drain_timeout=...)``."""
        with self._refusing_new_connections():
            self._finish_in_flight(drain_timeout)

    @contextlib.contextmanager
    def _refusing_new_connections(self) -> Iterator[None]:
        """Refuse every connection made while the block runs, from a thread of its own."""
        listener = getattr(self, "socket", None)
        if listener is None or listener.fileno() == -1 or listener.type != socket.SOCK_STREAM:
            yield
            return
        done_reader, done_writer = socket.socketpair()
        refuser = threading.Thread(
            target=self._refuse_until, args=(listener, done_reader), name="refuse while stopping"
        )
        refuser.start()
        try:
            yield
        finally:
            with done_writer, contextlib.suppress(OSError):  # the refuser may have died early
                done_writer.send(b"x")  # it closes done_reader as it ends, however late
            refuser.join(FORCED_CLOSE_GRACE)
            if refuser.is_alive():  # a shutdown_request() override that blocks, say
                logger.warning("the thread refusing connections did not end; leaving it")

    def _refuse_until(self, listener: _Socket, done: _Socket) -> None:
        """Refuse what is in the backlog, then each connection as it comes, until *done* is
        readable; after an accept error (out of descriptors, say), wait ``ACCEPT_BACKOFF``
        before trying again. Closes *done* as it returns; an error ends it with a log line
        (clients then wait in the backlog until the listener closes)."""
        with done:
            try:
                self._refuse_while_open(listener, done)
            except Exception:
                logger.exception("cannot refuse the connections made while stopping")

    def _refuse_while_open(self, listener: _Socket, done: _Socket) -> None:
        with selectors.DefaultSelector() as both, selectors.DefaultSelector() as done_only:
            both.register(done, selectors.EVENT_READ)
            both.register(listener, selectors.EVENT_READ)
            done_only.register(done, selectors.EVENT_READ)
            while True:
                if self._refuse_pending():
                    ready = both.select()
                else:  # the listener stays readable: wait for the end alone, a while
                    ready = done_only.select(ACCEPT_BACKOFF)
                if any(key.fileobj is done for key, _ in ready):
                    return

    def _refuse_pending(self) -> bool:
        """Refuse the connections the kernel has accepted but the server has not, so that
        none is dropped without a word when the listener closes (stream servers only).
        False if ``accept()`` failed otherwise than for want of connections."""
        listener = getattr(self, "socket", None)
        if listener is None or listener.fileno() == -1 or listener.type != socket.SOCK_STREAM:
            return True
        timeout = listener.gettimeout()
        listener.setblocking(False)
        try:
            for _ in range(MAX_REFUSED_ON_STOP):
                try:
                    # the plain accept, not get_request(): no TLS handshake or other wait
                    # for a client that will only be turned away
                    request, client_address = socket.socket.accept(listener)
                except BlockingIOError:  # the backlog is empty
                    return True
                except OSError as exc:
                    if exc.errno == errno.ECONNABORTED:  # that client gave up: the next
                        continue
                    logger.debug("cannot refuse what waits in the backlog: %r", exc)
                    return False
                if isinstance(request, socket.socket):
                    request.setblocking(True)  # on BSDs it inherits the listener's O_NONBLOCK
                self._refuse(request, client_address, "stopping")
            return True
        finally:
            with contextlib.suppress(OSError):  # closed meanwhile by server_close()
                listener.settimeout(timeout)

    def _finish_in_flight(self, timeout: float | None) -> None:
        """Let requests in flight finish within *timeout* seconds (None: no limit), then shut
        the connections of the rest so that their handlers end."""
        strategy = self._concurrency
        if strategy is None:
            return
        deadline = None
        if timeout is not None and timeout <= MAX_TIMEOUT:  # past it (math.inf): no limit
            deadline = time.monotonic() + timeout
        if strategy.drain(deadline):
            return
        self._shut_in_flight(timeout or 0.0)
        if not strategy.drain(time.monotonic() + FORCED_CLOSE_GRACE):
            logger.warning(
                "requests still running %.1f s after their connections were closed",
                FORCED_CLOSE_GRACE,
            )

    def _close_concurrency(self) -> None:
        """Finish (per ``block_on_close`` and ``drain_timeout``) and close the strategy, once."""
        strategy = self._concurrency
        if strategy is None or self._concurrency_closed:
            return
        self._concurrency_closed = True
        if self.block_on_close:
            self._finish_in_flight(self.drain_timeout)
        strategy.close()

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
                    self._handle_request_noblock()
                    return None
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout < 0:
                        return self.handle_timeout()

    def _accept_batch(self, control: _LoopControl) -> None:
        """The listener is readable: take a request, and, into a thread pool from a
        non-blocking listener, up to ``ACCEPT_BATCH`` of those waiting, as the pool's
        capacity allows (a burst then costs one ``select()``, not one per connection).
        Otherwise one, as in socketserver: a blocking listener would block, forking
        servers enforce ``max_children`` only between turns, and a worker without a pool
        would take a whole burst from its peers."""
        if not self._handle_request_noblock() or not self._batches_accepts():
            return
        for _ in range(ACCEPT_BATCH - 1):
            if control.stop_requested or not self._has_capacity():
                return
            if not self._handle_request_noblock():
                return

    def _batches_accepts(self) -> bool:
        sock = getattr(self, "socket", None)
        return (
            isinstance(self._concurrency, ThreadPool)
            and isinstance(sock, socket.socket)
            and sock.gettimeout() == 0.0
        )

    def _handle_request_noblock(self) -> bool:
        """Accept one request and process it; the listener must be readable. False when no
        request was waiting (another process took it) or accepting failed."""
        try:
            request, client_address = self.get_request()
        except BlockingIOError:
            return False  # another worker took it first
        except OSError as exc:
            pause = self._accept_policy.backoff_after(exc, self)
            if pause:
                self._accept_paused_until = time.monotonic() + pause
            return False
        if isinstance(request, socket.socket) and not self._admit(request, client_address):
            return True
        if self.verify_request(request, client_address):
            self._inline_request = (request, client_address)  # for shutdown(drain_timeout=)
            try:
                self.process_request(request, client_address)
            except Exception:
                self._report_error(request, client_address)
                self.shutdown_request(request)
            except BaseException:
                self.shutdown_request(request)
                raise
            finally:
                self._inline_request = None
        else:
            self.shutdown_request(request)
        return True

    def _listener_closed(self) -> bool:
        try:
            return self.fileno() == -1
        except (OSError, NotImplementedError):
            return False

    def _admit(self, conn: _Socket, client_address: ClientAddress) -> bool:
        """Apply the connection limits and ``idle_timeout``; refuse and close if over.

        Connections are registered only where something reads the registry: limits, or a
        strategy whose requests a stop may have to cut short. The limits are read here, for
        each connection: setting them on a running server takes effect at once."""
        registry = self._connections
        registry.max_total = self.max_connections
        registry.max_per_ip = self.max_connections_per_ip
        if self._concurrency is not None or registry.has_limits:
            reason = registry.admit(conn, client_address)
            if reason is not None:
                self._refuse(conn, client_address, reason)
                return False
            self._tell_share_of_limit()
        if self.idle_timeout is not None:
            conn.settimeout(self.idle_timeout)
            if type(conn) is socket.socket:
                conn.__class__ = IdleTimeoutSocket  # see there: tells idle from other timeouts
        return True

    def _refuse(self, request: Any, client_address: ClientAddress, reason: str) -> None:
        """Close a request the server will not serve: busy message, count, rate-limited log."""
        self.refused[reason] += 1
        self._refusal_log.log(
            logging.WARNING,
            reason,
            "refused connection from %s: %s (%d refused so far)",
            format_address(client_address),
            reason,
            self.refused[reason],
        )
        if self.busy_message and isinstance(request, socket.socket):
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never wait on a client we are turning away
                request.send(self.busy_message)
        self.shutdown_request(request)

    def _report_error(self, request: Any, client_address: ClientAddress) -> None:
        """From an ``except`` block: an idle timeout gets a log line, anything else goes to
        ``handle_error()``."""
        if request in self._shut_by_server:
            logger.info(
                "request from %s ended with %r after the stopping server closed its connection",
                format_address(client_address),
                sys.exc_info()[1],
            )
            return
        if isinstance(sys.exc_info()[1], IdleTimeoutError):
            logger.info(
                "closed connection from %s: idle for %.1f s",
                format_address(client_address),
                self.idle_timeout,
            )
            return
        self.handle_error(request, client_address)

    def handle_timeout(self) -> None:
        """Called when ``handle_request()`` times out; may be overridden."""

    def verify_request(self, request: Any, client_address: ClientAddress) -> bool:
        """Return False to refuse the request (it is then closed); the default accepts all."""
        return True

    def process_request(self, request: Any, client_address: ClientAddress) -> None:
        """Serve the request: with the server's concurrency strategy if it has one, else
        inline (then shut it down), as the standard library does."""
        if self._concurrency is None:
            self.finish_request(request, client_address)
            self.shutdown_request(request)
            return
        self._submit(request, client_address, lambda: self._serve_guarded(request, client_address))

    def _submit(
        self, request: Any, client_address: ClientAddress, serve: Callable[[], object]
    ) -> None:
        """Hand *serve* to the strategy; refuse the request if it has no room."""
        assert self._concurrency is not None
        if not self._concurrency.submit(request, serve):
            self._refuse(request, client_address, "busy")

    def _serve_guarded(self, request: Any, client_address: ClientAddress) -> None:
        """Serve one request off the accepting thread: errors reported, request shut down."""
        serving_here = self._serving_here
        serving_here.request = request  # for shutdown() and server_close() from the handler
        try:
            self.finish_request(request, client_address)
        except Exception:
            self._report_error(request, client_address)
        finally:
            serving_here.request = None
            self.shutdown_request(request)

    def _request_served_here(self) -> Any:
        """The request this thread is serving (a handler calling back), or None."""
        return getattr(self._serving_here, "request", None)

    def server_close(self) -> None:
        """Clean up the server: finish and close the concurrency strategy, if any."""
        self._close_concurrency()

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

    def __exit__(self, *args: object) -> None:
        self.server_close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {format_address(self.server_address)}>"


def _check_options(server: BaseServer) -> None:
    """Raise ConfigError for a limit or timeout that cannot work (checked once, up front,
    so that a bad value cannot fail later inside the accept loop)."""
    for name in ("max_connections", "max_connections_per_ip"):
        value = getattr(server, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}: expected a whole number of at least 1, got {value!r}")
    # idle_timeout 0 would make each connection non-blocking, and past MAX_TIMEOUT every
    # settimeout() of an accepted connection (or a drain's wait) overflows
    for name, zero_ok in (("idle_timeout", False), ("drain_timeout", True)):
        value = getattr(server, name)
        if value is None:
            continue
        if not isinstance(value, int | float) or not (
            (value >= 0 if zero_ok else value > 0) and value <= MAX_TIMEOUT
        ):
            low = "0" if zero_ok else "more than 0"
            raise ConfigError(
                f"{name}: expected seconds, from {low} to {MAX_TIMEOUT:g}, got {value!r}"
            )


def _drain_wakeups(wakeup: socket.socket) -> None:
    """Read the wakeup bytes so that the next ``select()`` waits again."""
    with contextlib.suppress(BlockingIOError):
        while wakeup.recv(4096):
            pass


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
        *,
        concurrency: ConcurrencyStrategy | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        idle_timeout: float | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        BaseServer.__init__(
            self,
            server_address,
            RequestHandlerClass,
            concurrency=concurrency,
            max_connections=max_connections,
            max_connections_per_ip=max_connections_per_ip,
            idle_timeout=idle_timeout,
            drain_timeout=drain_timeout,
        )
        try:
            self.socket = socket.socket(self.address_family, self.socket_type)
        except BaseException:
            BaseServer.server_close(self)  # the strategy's threads, if any
            raise
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
        """Close the listening socket, then finish and close the concurrency strategy. A
        ``serve_forever()`` still running (this is called from a handler) then returns."""
        self.socket.close()
        self._loop_control.wake()  # its descriptor's number may be another socket's soon
        BaseServer.server_close(self)

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
        registry = self._connections
        registry.release(request)
        request.close()
        self._tell_share_of_limit()


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
