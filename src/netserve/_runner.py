"""Running a handler from a ``Config``: listeners, servers, a process or supervised workers.

``serve()`` is what ``netserve serve`` runs, and the programmatic way to run a handler in
production. It raises (``BindError``, ``HandlerImportError``, ``ConfigError``) and logs;
exit codes belong to the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import signal
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from . import aio
from ._errors import BindError, ConfigError, HandlerImportError
from ._handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from ._listeners import Endpoint, format_address
from ._log import logger
from ._server import (
    FORCED_CLOSE_GRACE,
    MAX_REFUSED_ON_STOP,
    BaseServer,
    TCPServer,
    UDPServer,
    UnixDatagramServer,
    UnixStreamServer,
)
from ._types import ClientAddress, RequestHandlerFactory
from ._version import __version__ as _version
from .aio import loop_name
from .config import DEFAULT_HANDLER, DEFAULT_THREADS, Config
from .strategies import ConcurrencyStrategy, Overflow, ThreadPerRequest, ThreadPool
from .strategies.pool import LoadShare

if TYPE_CHECKING:
    from .supervisor import Worker

__all__ = [
    "Listener",
    "ServerGroup",
    "build_servers",
    "close_server",
    "load_handler",
    "open_listeners",
    "run",
    "serve",
]

#: Listen backlog: the stdlib's 5 refuses connections under any burst; the kernel caps this
#: at net.core.somaxconn anyway.
LISTEN_BACKLOG = 1024

#: How often an idle serve loop runs its service actions (and a worker's heartbeat).
POLL_INTERVAL = 0.5


#: The handler kinds that run on an event loop (``netserve.aio``), not on threads.
_EVENT_LOOP_HANDLERS = (aio.AsyncRequestHandler, aio.LineHandler, aio.LengthPrefixedHandler)
#: Handlers served by threads: ours, and the standard library's (``http.server``'s, say).
_THREAD_HANDLERS = (BaseRequestHandler, socketserver.BaseRequestHandler)
_STREAM_HANDLERS = (StreamRequestHandler, socketserver.StreamRequestHandler)
_DATAGRAM_HANDLERS = (DatagramRequestHandler, socketserver.DatagramRequestHandler)


def load_handler(spec: str | type) -> type[Any]:
    """Import ``MODULE:CLASS`` and check that it names a request handler class: a
    ``BaseRequestHandler`` of netserve or of the standard library's ``socketserver``
    (served by threads) or a ``netserve.aio`` handler (``AsyncRequestHandler``,
    ``LineHandler``, ``LengthPrefixedHandler``: an event loop).

    Raises ``HandlerImportError`` saying what failed (the module, the name, or the kind).
    """
    handler: object = spec
    if isinstance(spec, str):
        handler = _import(spec)
    if not (
        isinstance(handler, type)
        and issubclass(handler, (*_THREAD_HANDLERS, *_EVENT_LOOP_HANDLERS))
    ):
        raise HandlerImportError(
            f"{spec} is not a request handler class (a BaseRequestHandler subclass, of "
            "netserve or socketserver, or a netserve.aio.AsyncRequestHandler, LineHandler or "
            "LengthPrefixedHandler subclass)"
        )
    return handler


def check_transport(handler: object, config: Config) -> None:
    """Raise ``ConfigError`` if a handler class cannot serve the transport chosen: a stream
    handler with ``udp``, a datagram handler without it."""
    if not isinstance(handler, type):
        return
    name = handler.__qualname__
    if config.udp and issubclass(handler, _STREAM_HANDLERS):
        raise ConfigError(f"udp: {name} is a stream handler; it cannot serve UDP")
    if not config.udp and issubclass(handler, _DATAGRAM_HANDLERS):
        raise ConfigError(f"udp: {name} is a datagram handler; serve it with --udp")


def runs_on_event_loop(handler: type[Any]) -> bool:
    """Whether *handler* is served by ``netserve.aio`` rather than by threads."""
    return issubclass(handler, _EVENT_LOOP_HANDLERS)


def _import(spec: str) -> object:
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
    return handler


@dataclass(frozen=True)
class Listener:
    """A bound (and, for streams, listening) socket and the endpoint it was opened for."""

    endpoint: Endpoint
    socket: socket.socket


def open_listeners(config: Config) -> list[Listener]:
    """Bind every ``config.bind`` address; all or none.

    Raises ``BindError`` naming the address when one cannot be bound; the sockets already
    bound are closed (and their Unix socket files removed) first.
    """
    listeners: list[Listener] = []
    try:
        for endpoint in config.endpoints():
            listeners.append(Listener(endpoint, _open(endpoint, config.udp)))
    except BaseException:
        for listener in listeners:
            _close_listener(listener.socket)
        raise
    return listeners


def _open(endpoint: Endpoint, udp: bool) -> socket.socket:
    if endpoint.family == socket.AF_UNIX:
        _remove_stale_unix_socket(str(endpoint.address))
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp and endpoint.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(endpoint.address)
        if not udp:
            sock.listen(LISTEN_BACKLOG)
    except (OSError, OverflowError) as exc:
        sock.close()
        code = getattr(exc, "errno", None) or errno.EINVAL
        reason = getattr(exc, "strerror", None) or str(exc)
        if endpoint.family == socket.AF_UNIX and code == errno.EADDRINUSE:
            reason = _why_unix_path_in_use(str(endpoint.address), reason)
        raise BindError(code, f"cannot listen on {endpoint}: {reason}") from exc
    return sock


def _why_unix_path_in_use(path: str, reason: str) -> str:
    """*reason* ("Address already in use") with what is at *path*, which the user can act on:
    a stale socket file was removed before ``bind()``, so a socket there is a live server's."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # gone meanwhile, or an abstract address
        return reason
    if stat.S_ISSOCK(mode):
        return f"{reason} (a server is listening there)"
    return f"{reason} (the path exists and is not a socket: left alone; remove it or pick another)"


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a Unix socket file left by a server that is gone; never a live one or a file.

    Anything that cannot be looked at (a bad path) is left for ``bind()`` to report."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # non-blocking: a live server with a full backlog must not make startup hang
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(OSError):  # else bind() says what is wrong
                os.unlink(path)
                logger.info("removed stale socket file %s", path)
        except OSError:
            pass  # live (connected, or its backlog is full: EAGAIN), or not ours to judge


def _close_listener(sock: socket.socket) -> None:
    """Close a listening socket and remove its Unix socket file, if it has one (once)."""
    if sock.fileno() == -1:
        return
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def close_server(server: TCPServer) -> None:
    """Close *server* and remove its Unix socket file, if it has one."""
    path = server.server_address if server.address_family == socket.AF_UNIX else None
    server.server_close()
    if path:
        with contextlib.suppress(OSError):
            os.unlink(str(path))


def _strategy(config: Config, share: LoadShare | None) -> ConcurrencyStrategy:
    if config.threads:
        return ThreadPool(
            config.threads,
            config.max_queued,
            cast(Overflow, config.overflow),
            pause_when_busy=config.workers > 0,  # leave new connections to idle workers
            share=share,  # and to the less loaded ones
        )
    # daemon threads, so a fast stop never waits for them; a graceful one drains them all
    return ThreadPerRequest(daemon=lambda: True, drain_daemon_threads=True)


_BASES: dict[tuple[bool, bool], type[TCPServer]] = {
    (False, False): TCPServer,
    (False, True): UDPServer,
    (True, False): UnixStreamServer,
    (True, True): UnixDatagramServer,
}


def _server_for(
    listener: Listener,
    handler: RequestHandlerFactory,
    config: Config,
    on_tick: Callable[[], None],
    share: LoadShare | None,
) -> TCPServer:
    """A server on the already bound *listener*, with its own strategy and the limits."""
    base = _BASES[(listener.endpoint.family == socket.AF_UNIX, config.udp)]

    def service_actions(server: TCPServer) -> None:
        base.service_actions(server)
        on_tick()

    cls: type[TCPServer] = type(
        base.__name__,
        (base,),
        {
            "address_family": listener.endpoint.family,
            "service_actions": service_actions,
        },
    )
    server = cls(
        listener.endpoint.address,
        handler,
        bind_and_activate=False,
        concurrency=_strategy(config, share),
        max_connections=config.max_connections,
        max_connections_per_ip=config.max_connections_per_ip,
        idle_timeout=config.idle_timeout,
        drain_timeout=config.drain_timeout,
    )
    server.socket.close()
    server.socket = listener.socket
    server.server_address = listener.socket.getsockname()
    return server


def build_servers(
    config: Config,
    handler: RequestHandlerFactory,
    listeners: list[Listener] | None = None,
    on_tick: Callable[[], None] = lambda: None,
    on_request: Callable[[], None] = lambda: None,
    share: LoadShare | None = None,
) -> list[TCPServer]:
    """One server per listener (opened from ``config.bind`` when not given), each with its
    own pool of ``config.threads`` threads; each request ends with one log line. A
    pre-forked worker passes its *share* (``worker.balance``): its pools then accept only
    while the worker is among the least loaded."""
    check_transport(handler, config)
    opened = listeners is None
    if listeners is None:
        listeners = open_listeners(config)
    logged = _logged(handler, on_request)
    servers: list[TCPServer] = []
    try:
        for listener in listeners:
            servers.append(_server_for(listener, logged, config, on_tick, share))
    except BaseException:
        for server in servers:
            server.server_close()  # its pool; the listener is closed below
        if opened:
            for listener in listeners:
                _close_listener(listener.socket)
        raise
    return servers


def _logged(
    handler: RequestHandlerFactory, on_request: Callable[[], None]
) -> RequestHandlerFactory:
    """Wrap *handler* so that each request ends with one log line: client and duration."""

    def serve_and_log(request: Any, client_address: ClientAddress, server: BaseServer) -> None:
        started = time.monotonic()
        outcome = "failed"
        try:
            handler(request, client_address, server)
            outcome = "closed"
        finally:
            on_request()
            if logger.isEnabledFor(logging.INFO):
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


#: What ``ServerGroup`` reads from its stop socket: graceful, fast, a serve loop died.
_STOP_WORDS = (b"G", b"F", b"X")

#: Signals only a supervisor acts on (reload, one worker more or fewer). A single process logs
#: them and serves on; left to their default actions, HUP would end it with no drain and
#: TTIN/TTOU would suspend it.
_SUPERVISOR_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGHUP", "SIGTTIN", "SIGTTOU") if hasattr(signal, name)
)


def _log_supervisor_signal(signum: int) -> None:
    """Say that *signum* (one of ``_SUPERVISOR_SIGNALS``) is ignored here. Not from a signal
    handler: from the code that reads the wakeup fd, or a loop's signal callback."""
    logger.warning(
        "%s ignored: reloading and scaling need workers (--workers N)", signal.Signals(signum).name
    )


def _note_signal_byte(word: bytes) -> None:
    """A byte from the wakeup fd that is not a stop word: the number of a signal caught."""
    if word and word[0] in _SUPERVISOR_SIGNALS:
        _log_supervisor_signal(word[0])


class ServerGroup:
    """Several servers, each serving in its own thread, stopped together.

    ``serve()`` blocks until ``stop()`` is called; then every server stops accepting and is
    closed: after letting requests in flight finish (up to its ``drain_timeout``) for a
    graceful stop, at once for a fast one. ``stop()`` only writes a byte to a socket, so it
    is safe from any thread and from a signal handler.
    """

    def __init__(self, servers: list[TCPServer], *, owns_socket_files: bool = True) -> None:
        self.servers = servers
        self._owns_socket_files = owns_socket_files
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._stop_writer.setblocking(False)

    @property
    def wakeup_fd(self) -> int:
        """A descriptor to give ``signal.set_wakeup_fd``: what it writes wakes ``serve()``
        (and is otherwise ignored)."""
        return self._stop_writer.fileno()

    def stop(self, graceful: bool = True) -> None:
        """Ask ``serve()`` to return; returns at once. The first request decides the kind."""
        with contextlib.suppress(OSError):  # full or closed: a stop is pending or done
            self._stop_writer.send(b"G" if graceful else b"F")

    def serve(self, on_started: Callable[[], None] = lambda: None) -> bool:
        """Serve until stopped; False if a serve loop died (its error is logged), which
        stops the group at once rather than leave a process that serves nothing."""
        threads = [
            threading.Thread(
                target=self._serve_one, args=(server,), name=f"serve {server!r}", daemon=True
            )
            for server in self.servers
        ]
        graceful = True
        self._loops_ok = True
        try:
            for thread in threads:
                thread.start()
            on_started()
            word = self._stop_reader.recv(1)
            while word not in _STOP_WORDS:  # a signal number from the wakeup fd
                _note_signal_byte(word)
                word = self._stop_reader.recv(1)
            graceful = word == b"G"
            logger.info("stopping %s", "gracefully" if graceful else "now")
            for server in self.servers:
                server.shutdown()
            if graceful and self._owns_socket_files:
                for server in self.servers:  # nobody else will take what is in the backlog
                    server._refuse_pending()
        finally:
            self._close_all(graceful)
            self._stop_reader.close()
            self._stop_writer.close()
        return self._loops_ok

    def _serve_one(self, server: TCPServer) -> None:
        try:
            server.serve_forever(POLL_INTERVAL)
        except BaseException:
            logger.critical("the serve loop of %r died; stopping", server, exc_info=True)
            self._loops_ok = False
            with contextlib.suppress(OSError):
                self._stop_writer.send(b"X")

    def _close_all(self, graceful: bool) -> None:
        """Close every server, draining them in parallel when *graceful*; a fast stop asked
        for meanwhile (a second signal) cuts the drain short."""
        closers = []
        for server in self.servers:
            server.block_on_close = graceful
            close = close_server if self._owns_socket_files else type(server).server_close
            closer = threading.Thread(target=self._close_one, args=(close, server), daemon=True)
            closer.start()
            closers.append(closer)
        open_closers = len(closers)
        while open_closers:
            word = self._stop_reader.recv(1)
            if word == b"D":
                open_closers -= 1
            elif word == b"F" and graceful:
                graceful = False
                logger.info("stopping now: requests still in flight are cut short")
                for server in self.servers:
                    server._finish_in_flight(0.0)
            elif word not in _STOP_WORDS:
                _note_signal_byte(word)
        for closer in closers:
            closer.join()

    def _close_one(self, close: Callable[[TCPServer], None], server: TCPServer) -> None:
        try:
            close(server)
        finally:
            with contextlib.suppress(OSError):
                self._stop_writer.send(b"D")


def _describe(server: TCPServer) -> str:
    kind = "udp" if isinstance(server, UDPServer) else "tcp"
    if server.address_family == socket.AF_UNIX:
        kind = "unix"
    return f"{kind} {format_address(server.server_address)}"


def _announce(servers: Iterable[TCPServer], config: Config) -> None:
    """The startup lines: version, mode and every limit in force, then each listener."""
    logger.info("netserve %s, pid %d: %s", _version, os.getpid(), config.describe())
    for server in servers:
        logger.info("serving %s on %s", config.handler_name, _describe(server))


def serve(
    handler: str | type = DEFAULT_HANDLER,
    address: str | tuple[Any, ...] | list[str | tuple[Any, ...]] | None = None,
    *,
    install_signal_handlers: bool = True,
    **options: Any,
) -> int:
    """Serve *handler* (a class, or ``"MODULE:CLASS"``) on *address* until stopped.

    *address* is ``(host, port)``, ``"HOST:PORT"``, ``"unix:PATH"`` or a list of them;
    *options* are ``Config`` fields (``threads``, ``workers``, ``max_connections``, ...).
    With ``workers=0`` this process serves; otherwise it supervises that many pre-forked
    worker processes. SIGTERM stops gracefully (requests in flight get ``drain_timeout``),
    SIGINT and SIGQUIT at once; without workers, SIGHUP, SIGTTIN and SIGTTOU are logged and
    ignored. Returns the exit status to use (non-zero when workers could not boot).
    """
    if address is not None:
        options["bind"] = _bind_texts(address)
    return run(Config(handler=handler, **options), install_signal_handlers)


def run(config: Config, install_signal_handlers: bool = True) -> int:
    """Serve as *config* says until stopped; see ``serve()``."""
    if config.workers:
        if not install_signal_handlers or threading.current_thread() is not threading.main_thread():
            raise ConfigError(
                "workers: the supervisor is driven by signals (TERM, INT, HUP, TTIN, TTOU) "
                "and installs their handlers: serve from the main thread, with "
                "install_signal_handlers=True"
            )
        return _serve_with_workers(config)
    handler = load_handler(config.handler)
    _warn_ignored(config, runs_on_event_loop(handler))
    if runs_on_event_loop(handler):
        return _serve_on_event_loop(config, handler, install_signal_handlers)
    servers = build_servers(config, handler)
    group = ServerGroup(servers)
    with _signals_stop(group.stop, install_signal_handlers, group.wakeup_fd):
        _announce(servers, config)
        served = group.serve()
    return 0 if served else 1


def _warn_ignored(config: Config, event_loop: bool) -> None:
    """A warning for the options given that do not apply here."""
    ignored = config.ignored(event_loop)
    without_workers = [name for name in ignored if name not in _MODE_OPTIONS]
    other_mode = [name for name in ignored if name in _MODE_OPTIONS]
    if without_workers:
        logger.warning("ignored without workers: %s", ", ".join(without_workers))
    if other_mode:
        kind = "an event-loop handler" if event_loop else "a thread handler"
        logger.warning("ignored with %s: %s", kind, ", ".join(other_mode))


_MODE_OPTIONS = frozenset({"max_queued", "overflow", "loop", "transport"})


def _event_loop_server(
    config: Config,
    handler: type[Any],
    listeners: list[Listener],
    heartbeat: Callable[[], object] | None = None,
    on_request: Callable[[], object] | None = None,
    share: LoadShare | None = None,
) -> aio.AsyncServer:
    if config.udp:
        raise ConfigError("udp: async and message handlers serve streams only")
    return aio.AsyncServer(
        handler,
        [listener.socket for listener in listeners],
        max_connections=config.max_connections,
        max_connections_per_ip=config.max_connections_per_ip,
        idle_timeout=config.idle_timeout,
        drain_timeout=config.drain_timeout,
        threads=config.threads or DEFAULT_THREADS,
        heartbeat=heartbeat,
        on_request=on_request,
        share=share,
        transport=config.transport,
    )


def _serve_on_event_loop(config: Config, handler: type[Any], install_signals: bool) -> int:
    """Serve an async or message handler in this process until a signal stops it."""
    listeners = open_listeners(config)
    unix_paths = [sock.getsockname() for sock in _sockets(listeners, socket.AF_UNIX)]
    # the loop's handlers outlive it (uvloop leaves its own, asyncio SIG_DFL): put back ours
    previous = (
        _current_handlers()
        if install_signals and threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        server = _event_loop_server(config, handler, listeners)

        def ready() -> None:
            if install_signals and threading.current_thread() is threading.main_thread():
                # the loop's own handlers: they wake it whichever thread gets the signal
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, server.request_stop, True)
                loop.add_signal_handler(signal.SIGINT, server.request_stop, False)
                loop.add_signal_handler(signal.SIGQUIT, server.request_stop, False)
                for signum in _SUPERVISOR_SIGNALS:
                    loop.add_signal_handler(signum, _log_supervisor_signal, signum)
            _close_originals(listeners)
            _announce_event_loop(server, config)

        server.serve(config.loop, on_ready=ready)
    finally:
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)
        for listener in listeners:
            listener.socket.close()
        for path in unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return 0


def _current_handlers() -> dict[signal.Signals, Any]:
    """The handlers of the signals ``serve()`` handles, to restore when it returns; those set
    from outside Python (``getsignal()`` says None) cannot be, and are left out."""
    handlers = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, *_SUPERVISOR_SIGNALS):
        handler = signal.getsignal(signum)
        if handler is not None:
            handlers[signum] = handler
    return handlers


def _sockets(listeners: list[Listener], family: int) -> list[socket.socket]:
    return [listener.socket for listener in listeners if listener.socket.family == family]


def _close_originals(listeners: list[Listener]) -> None:
    """The event-loop server serves duplicates of the listening sockets, and closes them when
    it stops: close the originals once it serves, so that a stop leaves nothing holding the
    port open (a client would wait in the backlog through the drain, then be reset)."""
    for listener in listeners:
        listener.socket.close()


def _announce_event_loop(server: aio.AsyncServer, config: Config, startup: bool = True) -> None:
    if startup:
        logger.info(
            "netserve %s, pid %d: %s",
            _version,
            os.getpid(),
            config.describe(event_loop=_loop_text(server)),
        )
    for address in server.addresses:
        logger.info("serving %s on %s", config.handler_name, _describe_address(address))


def _loop_text(server: aio.AsyncServer) -> str:
    """The running loop and the server's transports, for log lines."""
    return f"{loop_name(asyncio.get_running_loop())}, {server.transport} transports"


def _describe_address(address: Any) -> str:
    kind = "unix" if isinstance(address, str | bytes) else "tcp"
    return f"{kind} {format_address(address)}"


def _bind_texts(address: str | tuple[Any, ...] | list[str | tuple[Any, ...]]) -> tuple[str, ...]:
    addresses = address if isinstance(address, list) else [address]
    return tuple(a if isinstance(a, str) else format_address(a) for a in addresses)


@contextlib.contextmanager
def _signals_stop(stop: Callable[[bool], None], install: bool, wakeup_fd: int) -> Any:
    """While in the block, SIGTERM calls ``stop(True)`` (graceful), SIGINT and SIGQUIT
    ``stop(False)``; *stop* must be signal-safe (only enqueue). The supervisor's other signals
    (``_SUPERVISOR_SIGNALS``) are caught and do nothing but reach *wakeup_fd*, whose reader
    logs them.

    A signal may be delivered to any thread, while Python runs its handlers only in the main
    thread, between bytecodes: so the signal number is also written to *wakeup_fd* (a
    non-blocking socket the main thread waits on), which wakes it to run them.
    """
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return

    def graceful(signum: int, frame: FrameType | None) -> None:
        stop(True)

    def fast(signum: int, frame: FrameType | None) -> None:
        stop(False)

    def noted(signum: int, frame: FrameType | None) -> None:
        """Nothing here: the wakeup fd carries the number to the code that logs it."""

    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
        signal.SIGTERM: graceful,
        signal.SIGINT: fast,
        signal.SIGQUIT: fast,
        **dict.fromkeys(_SUPERVISOR_SIGNALS, noted),
    }
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    previous_wakeup_fd = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_wakeup_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve_with_workers(config: Config) -> int:
    """Bind here, then supervise ``config.workers`` processes serving on those sockets."""
    from .supervisor import Supervisor  # only the supervising process needs it

    if not isinstance(config.handler, str):
        # a class: check it here, where the error is clear
        check_transport(load_handler(config.handler), config)
    listeners = open_listeners(config)
    logger.info("netserve %s, pid %d: %s", _version, os.getpid(), config.describe())
    try:
        supervisor = Supervisor(
            _worker_target(config, listeners),
            [listener.socket for listener in listeners],
            workers=config.workers,
            worker_timeout=config.worker_timeout,
            max_requests=config.max_requests,
            max_requests_jitter=config.max_requests_jitter,
            # a worker drains for drain_timeout, then gives shut connections a grace period
            graceful_timeout=config.drain_timeout + FORCED_CLOSE_GRACE + 1.0,
            on_stop=lambda graceful: _stop_listening(listeners, graceful),
        )
        for listener in listeners:
            logger.info("listening on %s", format_address(listener.socket.getsockname()))
        return supervisor.run()
    finally:
        for listener in listeners:
            _close_listener(listener.socket)


def _stop_listening(listeners: list[Listener], graceful: bool) -> None:
    """The supervisor's stop began and no worker accepts any more: refuse (close) the
    connections waiting in the backlog, with a log line, and close the listeners, so that
    new clients are refused at once instead of waiting out the drain to be reset."""
    for listener in listeners:
        sock = listener.socket
        if graceful and sock.type == socket.SOCK_STREAM and sock.fileno() != -1:
            refused = _refuse_backlog(sock)
            if refused:
                logger.warning(
                    "closed %d connections waiting on %s: the server is stopping",
                    refused,
                    format_address(sock.getsockname()),
                )
        _close_listener(sock)


def _refuse_backlog(sock: socket.socket) -> int:
    """Accept and close what waits in *sock*'s backlog (non-blocking); return how many."""
    sock.setblocking(False)
    refused = 0
    for _ in range(MAX_REFUSED_ON_STOP):
        try:
            conn, _address = sock.accept()
        except OSError:  # BlockingIOError: the backlog is empty
            break
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        conn.close()
        refused += 1
    return refused


def _serve_worker_on_event_loop(
    config: Config, handler: type[Any], listeners: list[Listener], worker: Worker
) -> None:
    server = _event_loop_server(
        config,
        handler,
        listeners,
        heartbeat=worker.notify,
        on_request=worker.count_request,
        share=worker.balance,
    )
    worker.on_stop(server.request_stop)

    def ready() -> None:
        worker.ready()  # counted in for new connections before it says it serves
        _close_originals(listeners)
        logger.info("worker mode: %s", config.describe_mode(_loop_text(server)))
        _announce_event_loop(server, config, startup=False)

    server.serve(config.loop, on_ready=ready)


def _worker_target(
    config: Config, listeners: list[Listener]
) -> Callable[[list[socket.socket], Worker], None]:
    """What each worker process runs: import the handler, serve the inherited sockets."""

    def run(sockets: list[socket.socket], worker: Worker) -> None:
        handler = load_handler(config.handler)  # HandlerImportError: the worker cannot boot
        _warn_ignored(config, runs_on_event_loop(handler))
        if runs_on_event_loop(handler):
            _serve_worker_on_event_loop(config, handler, listeners, worker)
            return
        servers = build_servers(
            config,
            handler,
            listeners,
            on_tick=worker.notify,
            on_request=worker.count_request,
            share=worker.balance,
        )
        group = ServerGroup(servers, owns_socket_files=False)

        def ready() -> None:
            worker.ready()  # counted in for new connections before it says it serves
            logger.info("worker mode: %s", config.describe_mode())
            for server in servers:
                logger.info("serving %s on %s", config.handler_name, _describe(server))

        worker.on_stop(lambda graceful: group.stop(graceful))
        if not group.serve(on_started=ready):
            raise RuntimeError("a serve loop died")  # the worker exits as crashed

    return run
