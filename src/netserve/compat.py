"""The standard library's mixins and one-line server classes, as thin shims over strategies,
and their bounded counterpart, ``ThreadPoolMixIn`` with the ``ThreadPool*`` servers.

``ThreadingMixIn`` and ``ForkingMixIn`` keep their stdlib attributes and hooks
(``daemon_threads``, ``block_on_close``, ``process_request_thread``; ``max_children``,
``active_children``, ``collect_children``) but only choose a strategy from
``netserve.strategies``; the work is done there.

They derive from the stdlib's mixins (``isinstance`` checks hold), whose code they run when
mixed into a server class of the standard library's ``socketserver``, such as
``http.server.HTTPServer`` in code that imports netserve as socketserver: such a server has
no strategies to choose from. ``ThreadPoolMixIn`` has no stdlib counterpart and refuses
such a class.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver as _stdlib
from typing import TYPE_CHECKING, Any, cast

from ._server import BaseServer, TCPServer, UDPServer, UnixDatagramServer, UnixStreamServer
from ._types import ClientAddress
from .config import DEFAULT_MAX_QUEUED, DEFAULT_THREADS
from .strategies import ConcurrencyStrategy, ForkPerRequest, Overflow, ThreadPerRequest, ThreadPool

__all__ = [
    "ForkingMixIn",
    "ForkingTCPServer",
    "ForkingUDPServer",
    "ForkingUnixDatagramServer",
    "ForkingUnixStreamServer",
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
]

if TYPE_CHECKING:  # the mixins see the server's hooks; at run time, see the else branch
    from ._server import BaseServer as _MixinBase
    from ._server import BaseServer as _StdlibForking
    from ._server import BaseServer as _StdlibThreading
else:  # or from the stdlib's mixins, which they stand in for
    _MixinBase = object
    _StdlibThreading = _stdlib.ThreadingMixIn
    _StdlibForking = _stdlib.ForkingMixIn


def _on_a_stdlib_server(cls: type) -> bool:
    """Whether *cls* derives from a server class of ``socketserver``, not of netserve."""
    return issubclass(cls, _stdlib.BaseServer) and not issubclass(cls, BaseServer)


def _skipping(stdlib_mixin: type, server: object) -> Any:
    """``super()`` past *stdlib_mixin*: the server core, for a netserve server."""
    return super(stdlib_mixin, server)


class ThreadingMixIn(_StdlibThreading):
    """Serve each request in a new thread.

    ``daemon_threads`` (read for each new thread) makes the threads daemons;
    ``block_on_close`` makes ``server_close()`` wait for the threads still serving (not for
    daemon threads, as in the stdlib). ``shutdown(drain_timeout=...)`` waits for every
    request, daemon threads included: it was asked to let them finish. Finished threads are
    not kept.
    """

    daemon_threads: bool = False
    block_on_close: bool = True
    #: Set for each subclass: mixed into a ``socketserver`` server, the stdlib's code runs.
    _ns_stdlib_host: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ns_stdlib_host = _on_a_stdlib_server(cls)

    def _make_concurrency(self) -> ConcurrencyStrategy:
        return ThreadPerRequest(daemon=lambda: self.daemon_threads)

    @property
    def _threads(self) -> Any:
        """The threads serving a request now (the stdlib's private name, kept for its tests);
        on a ``socketserver`` server, the stdlib's own record."""
        if self._ns_stdlib_host:
            return vars(self).get("_threads", vars(_stdlib.ThreadingMixIn)["_threads"])
        return self._thread_strategy.live_threads

    @property
    def _thread_strategy(self) -> ThreadPerRequest:
        return cast(ThreadPerRequest, self._concurrency)

    def process_request_thread(self, request: Any, client_address: ClientAddress) -> None:
        """Serve one request in its thread: what ``BaseServer`` does inline, plus the
        error handling that the accept loop does for inline requests."""
        if self._ns_stdlib_host:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
            return
        self._serve_guarded(request, client_address)

    def process_request(self, request: Any, client_address: ClientAddress) -> None:
        if self._ns_stdlib_host:
            super().process_request(request, client_address)
            return

        def process_request_thread() -> None:  # the threads' name, as in the stdlib
            self.process_request_thread(request, client_address)

        self._submit(request, client_address, process_request_thread)

    def _drain(self, drain_timeout: float) -> None:
        with self._thread_strategy.draining_daemon_threads():
            super()._drain(drain_timeout)

    def server_close(self) -> None:
        """Close the server, then (with ``block_on_close``) wait for the threads serving."""
        if self._ns_stdlib_host:
            super().server_close()
            return
        # BaseServer.server_close drains and closes the strategy
        _skipping(_stdlib.ThreadingMixIn, self).server_close()


class ForkingMixIn(_StdlibForking):
    """Serve each request in a forked child process.

    At most ``max_children`` children run at once (the server waits for one to exit before
    forking more); ``active_children`` holds their PIDs. Only this server's own children are
    ever reaped. ``block_on_close`` makes ``server_close()`` wait for all of them.

    As in the stdlib, the parent closes its copy of each connection at once. Beyond it, a
    connection served by a child counts toward ``max_connections`` and
    ``max_connections_per_ip`` until the child exits, and a graceful stop that reaches its
    drain timeout ends the connections children still serve: SIGTERM to the child, whose
    own handler shuts its connection down (a clean end for the client) before the child
    dies of the signal, as a stdlib child would.
    """

    timeout: float | None = 300
    max_children: int = 40
    block_on_close: bool = True
    #: Set for each subclass: mixed into a ``socketserver`` server, the stdlib's code runs.
    _ns_stdlib_host: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ns_stdlib_host = _on_a_stdlib_server(cls)

    def _make_concurrency(self) -> ConcurrencyStrategy:
        return ForkPerRequest(
            max_children=lambda: self.max_children,
            on_fork=self._forked,
            on_exit=self._child_exited,
        )

    def _forked(self, request: object, pid: int) -> _ChildConnection:
        """In the parent: the connection counts on as the child's, until it exits."""
        child = _ChildConnection(pid, self._fork_strategy)
        self._connections.transfer(request, child)
        return child

    def _child_exited(self, child: object) -> None:
        assert isinstance(child, _ChildConnection)
        child.exited = True
        self._connections.release(child)

    @property
    def _fork_strategy(self) -> ForkPerRequest:
        return cast(ForkPerRequest, self._concurrency)

    @property
    def active_children(self) -> set[int] | None:
        """PIDs of the children still running (None before the first fork)."""
        if self._ns_stdlib_host:
            return cast("set[int] | None", vars(self).get("active_children"))
        strategy = self._fork_strategy
        return strategy.children if strategy.has_forked else None

    @active_children.setter
    def active_children(self, pids: set[int] | None) -> None:
        if self._ns_stdlib_host:
            self.__dict__["active_children"] = pids
            return
        strategy = self._fork_strategy
        strategy.children = set() if pids is None else pids
        strategy.has_forked = pids is not None
        strategy.forget_gone()

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap children that have exited, after waiting until fewer than ``max_children``
        are alive; with *blocking*, wait for all of them."""
        if self._ns_stdlib_host:
            super().collect_children(blocking=blocking)  # type: ignore[misc]
            return
        self._fork_strategy.collect(blocking=blocking)

    def handle_timeout(self) -> None:
        self.collect_children()

    def service_actions(self) -> None:
        self.collect_children()

    def process_request(self, request: Any, client_address: ClientAddress) -> None:
        """Fork; the child serves the request and exits, the parent closes its copy."""
        if self._ns_stdlib_host:
            super().process_request(request, client_address)
            return
        self._submit(
            request, client_address, lambda: self._process_request_in_child(request, client_address)
        )
        self.close_request(request)

    def _admit(self, conn: Any, client_address: ClientAddress) -> bool:
        self.collect_children()  # children that exited free their connections' places first
        return super()._admit(conn, client_address)

    def _process_request_in_child(self, request: Any, client_address: ClientAddress) -> None:
        child = os.getpid()

        def shut(signum: int, frame: object) -> None:
            """End the connection cleanly for the client, then die of SIGTERM as usual."""
            if os.getpid() == child and isinstance(request, socket.socket):
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # also in a process it forked
            os.kill(os.getpid(), signal.SIGTERM)

        with contextlib.suppress(ValueError):  # not the main thread: only a platform's oddity
            signal.signal(signal.SIGTERM, shut)
            # the forking thread may have had it blocked (signals kept for the main thread)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            self.finish_request(request, client_address)
        except Exception:
            self._report_error(request, client_address)
            raise  # the child exits with status 1
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        """Close the server, then reap the children (waiting for all with block_on_close)."""
        if self._ns_stdlib_host:
            super().server_close()
            return
        _skipping(_stdlib.ForkingMixIn, self).server_close()
        self.collect_children(blocking=self.block_on_close)


class _ChildConnection:
    """A connection a forked child serves, as the parent's registry holds it: it counts
    toward the limits until the child exits, and ``shutdown()`` (from a drain that timed
    out) asks the child, with SIGTERM, to shut it down.

    The child counts as gone once reaped, or once it is no longer among the strategy's
    children: code that reaps on its own (a ``collect_children()`` override, as the stdlib
    allows) takes it out of ``active_children``, and its PID may then be reused."""

    __slots__ = ("__weakref__", "_strategy", "exited", "pid")

    def __init__(self, pid: int, strategy: ForkPerRequest) -> None:
        self.pid = pid
        self.exited = False
        self._strategy = strategy

    def fileno(self) -> int:
        """-1 once the child is gone: the registry's test for a closed connection."""
        return -1 if self.exited or self.pid not in self._strategy.children else 0

    def shutdown(self, how: int) -> None:
        if self.fileno() != -1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


class ThreadPoolMixIn(_MixinBase):
    """Serve requests on a bounded pool of threads started up front (not in the stdlib).

    ``max_workers`` threads serve; up to ``max_queued`` accepted connections wait for one;
    past that ``overflow`` decides: ``"reject"`` closes new connections at once (after
    ``busy_message``), ``"wait"`` stops accepting until a thread is free. The class
    attributes are read when the server is created; ``server_close()`` lets requests in
    flight finish for up to ``drain_timeout`` seconds, then closes their connections.
    Equivalent to ``TCPServer(..., concurrency=ThreadPool(...))``.
    """

    max_workers: int = DEFAULT_THREADS
    max_queued: int = DEFAULT_MAX_QUEUED
    overflow: Overflow = "reject"
    drain_timeout: float | None = 30.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _on_a_stdlib_server(cls):
            raise TypeError(
                f"{cls.__qualname__}: ThreadPoolMixIn needs a netserve server class "
                "(netserve.TCPServer and the like), not one of socketserver's; "
                "ThreadingMixIn works with both"
            )

    def _make_concurrency(self) -> ConcurrencyStrategy:
        return ThreadPool(self.max_workers, self.max_queued, self.overflow)


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """A TCP server with a thread per request."""


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    """A UDP server with a thread per datagram."""


class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
    """A Unix stream server with a thread per request."""


class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
    """A Unix datagram server with a thread per datagram."""


class ThreadPoolTCPServer(ThreadPoolMixIn, TCPServer):
    """A TCP server with a bounded pool of threads."""


class ThreadPoolUDPServer(ThreadPoolMixIn, UDPServer):
    """A UDP server with a bounded pool of threads."""


class ThreadPoolUnixStreamServer(ThreadPoolMixIn, UnixStreamServer):
    """A Unix stream server with a bounded pool of threads."""


class ThreadPoolUnixDatagramServer(ThreadPoolMixIn, UnixDatagramServer):
    """A Unix datagram server with a bounded pool of threads."""


class ForkingTCPServer(ForkingMixIn, TCPServer):
    """A TCP server with a child process per request."""


class ForkingUDPServer(ForkingMixIn, UDPServer):
    """A UDP server with a child process per datagram."""


class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
    """A Unix stream server with a child process per request."""


class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
    """A Unix datagram server with a child process per datagram."""
