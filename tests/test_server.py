"""The server classes: BaseServer, TCPServer, UDPServer, UnixStreamServer, UnixDatagramServer.

The standard library's API and hook order, on real loopback and Unix sockets, and netserve's
promises beyond it: an immediate ``shutdown()``, ``shutdown()`` from an inline handler, errors
logged (not printed), and ``accept()`` resource errors that back off instead of spinning.
"""

from __future__ import annotations

import errno
import gc
import itertools
import logging
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any

import pytest

import netserve
from netserve._listeners import ACCEPT_BACKOFF
from netserve.testing import run_server
from tests.netio import (
    HOST,
    WAIT,
    UpperDatagramHandler,
    UpperHandler,
    needs_proc_fd,
    open_fd_count,
    recv_until_eof,
    request,
    start_serving,
)

#: What shutdown() may take at most, whatever the poll interval (netserve's promise).
SHUTDOWN_LATENCY = 0.05


# --- helpers ------------------------------------------------------------------------------


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class HookServer(netserve.TCPServer):
    """Records every hook the server calls, in order, with the request it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls: list[str] = []
        self.requests: list[Any] = []
        self.addresses: list[Any] = []
        self.accept = True
        super().__init__(*args, **kwargs)

    def _record(self, name: str, request: Any = None, client_address: Any = None) -> None:
        self.calls.append(name)
        if request is not None:
            self.requests.append(request)
        if client_address is not None:
            self.addresses.append(client_address)

    def server_bind(self) -> None:
        self._record("server_bind")
        super().server_bind()

    def server_activate(self) -> None:
        self._record("server_activate")
        super().server_activate()

    def get_request(self) -> tuple[Any, Any]:
        request, client_address = super().get_request()
        self._record("get_request", request, client_address)
        return request, client_address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self._record("verify_request", request, client_address)
        return self.accept

    def process_request(self, request: Any, client_address: Any) -> None:
        self._record("process_request", request, client_address)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self._record("finish_request", request, client_address)
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self._record("shutdown_request", request)
        super().shutdown_request(request)

    def close_request(self, request: Any) -> None:
        self._record("close_request", request)
        super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self._record("handle_error", request, client_address)

    def handle_timeout(self) -> None:
        self._record("handle_timeout")


class RecordingHandler(netserve.StreamRequestHandler):
    def handle(self) -> None:
        self.server.calls.append("handle")  # type: ignore[attr-defined]
        self.wfile.write(self.rfile.readline().upper())


# --- construction, binding, attributes ----------------------------------------------------


def test_tcp_server_binds_port_zero_and_refreshes_server_address(make_server: Any) -> None:
    server = make_server()
    host, port = server.server_address
    assert host == HOST
    assert port != 0
    assert server.server_address == server.socket.getsockname()
    assert server.socket.family == socket.AF_INET == server.address_family
    assert server.socket.type == socket.SOCK_STREAM == server.socket_type


def test_tcp_server_on_ipv6_loopback(make_server: Any) -> None:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")

    class TCP6Server(netserve.TCPServer):
        address_family = socket.AF_INET6

    server = make_server(TCP6Server, address=("::1", 0))
    assert server.socket.family == socket.AF_INET6
    assert server.server_address[0] == "::1"
    assert server.server_address[1] != 0
    with run_server(server) as address:
        assert request(address[:2], b"six\n", socket.AF_INET6) == b"SIX\n"


def test_fileno_is_the_listening_socket(make_server: Any) -> None:
    server = make_server()
    assert server.fileno() == server.socket.fileno()
    assert server.fileno() >= 0


def test_context_manager_returns_server_and_closes_socket() -> None:
    with netserve.TCPServer((HOST, 0), UpperHandler) as server:
        assert isinstance(server, netserve.TCPServer)
        assert server.fileno() >= 0
    assert server.fileno() == -1
    assert server.socket.fileno() == -1


def test_context_manager_closes_socket_when_block_raises() -> None:
    with (
        pytest.raises(RuntimeError, match="inside"),
        netserve.TCPServer((HOST, 0), UpperHandler) as server,
    ):
        raise RuntimeError("inside")
    assert server.fileno() == -1


def test_server_close_closes_listening_socket(make_server: Any) -> None:
    server = make_server()
    address = server.server_address
    server.server_close()
    assert server.fileno() == -1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT)


def test_bind_and_activate_false_defers_bind_and_listen(make_server: Any) -> None:
    server = make_server(HookServer, bind_and_activate=False)
    assert server.calls == []
    assert server.server_address == (HOST, 0)
    assert server.socket.getsockname() == ("0.0.0.0", 0)  # not bound

    server.allow_reuse_address = True  # may be changed before binding
    server.server_bind()
    assert server.server_address[1] != 0
    assert server.server_address == server.socket.getsockname()
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with pytest.raises(ConnectionRefusedError):  # bound, but not listening yet
        socket.create_connection(server.server_address, timeout=WAIT)

    server.server_activate()
    assert server.calls == ["server_bind", "server_activate"]
    with run_server(server) as address:
        assert request(address) == b"PING\n"


def test_constructor_binds_then_activates(make_server: Any) -> None:
    server = make_server(HookServer)
    assert server.calls == ["server_bind", "server_activate"]


@pytest.mark.parametrize("reuse", [False, True])
def test_allow_reuse_address_sets_so_reuseaddr(make_server: Any, reuse: bool) -> None:
    class Server(netserve.TCPServer):
        allow_reuse_address = reuse

    server = make_server(Server)
    assert bool(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)) is reuse


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_allow_reuse_port_lets_two_servers_share_a_port(make_server: Any) -> None:
    class Server(netserve.TCPServer):
        allow_reuse_port = True

    first = make_server(Server)
    second = make_server(Server, address=first.server_address)
    assert second.server_address == first.server_address
    assert second.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


@needs_proc_fd
def test_busy_port_raises_and_does_not_leak_the_socket(make_server: Any) -> None:
    first = make_server()
    before = open_fd_count()
    with pytest.raises(OSError, match="in use") as excinfo:
        netserve.TCPServer(first.server_address, UpperHandler)
    assert excinfo.value.errno == errno.EADDRINUSE
    assert open_fd_count() == before


@needs_proc_fd
def test_port_minus_one_raises_overflow_error_without_leaking_the_socket() -> None:
    before = open_fd_count()
    with pytest.raises(OverflowError):
        netserve.TCPServer((HOST, -1), UpperHandler)
    assert open_fd_count() == before


def test_a_socket_that_cannot_be_made_leaves_no_pool_threads() -> None:
    class Server(netserve.ThreadPoolTCPServer):
        address_family = 255  # no such family: socket() fails after the pool has started
        max_workers = 4

    before = threading.active_count()
    for _ in range(3):
        with pytest.raises(OSError, match="not supported"):
            Server((HOST, 0), UpperHandler)
    assert threading.active_count() == before


def test_request_queue_size_is_the_listen_backlog(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlogs: list[tuple[Any, ...]] = []
    real_listen = socket.socket.listen

    def listen(self: socket.socket, *args: Any) -> None:
        backlogs.append(args)
        real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "listen", listen)

    class Server(netserve.TCPServer):
        request_queue_size = 17

    make_server(Server)
    make_server(netserve.TCPServer)
    assert backlogs == [(17,), (5,)]


# --- the request hooks ----------------------------------------------------------------------


def test_handle_request_calls_the_hooks_in_stdlib_order(make_server: Any) -> None:
    server = make_server(HookServer, RecordingHandler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"hooks\n")
        server.handle_request()
        assert recv_until_eof(client) == b"HOOKS\n"
        client_address = client.getsockname()
    assert server.calls == [
        "server_bind",
        "server_activate",
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "handle",
        "shutdown_request",
        "close_request",
    ]
    request_socket = server.requests[0]
    assert all(r is request_socket for r in server.requests)
    assert isinstance(request_socket, socket.socket)
    assert request_socket.fileno() == -1  # closed by close_request
    assert server.addresses == [client_address] * 4


def test_get_request_returns_the_accepted_socket_and_peer(make_server: Any) -> None:
    server = make_server()
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        request_socket, client_address = server.get_request()
        with request_socket:
            assert client_address == client.getsockname()
            assert request_socket.getpeername() == client.getsockname()


def test_finish_request_instantiates_the_handler_class(make_server: Any) -> None:
    made: list[tuple[Any, ...]] = []

    def factory(*args: Any) -> None:
        made.append(args)

    server = make_server(handler=factory)
    server.finish_request("the request", ("192.0.2.1", 1234))
    assert made == [("the request", ("192.0.2.1", 1234), server)]


def test_refused_request_is_shut_down_and_client_sees_eof(make_server: Any) -> None:
    server = make_server(HookServer, RecordingHandler)
    server.accept = False
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
    assert server.calls[2:] == [
        "get_request",
        "verify_request",
        "shutdown_request",
        "close_request",
    ]
    assert server.requests[0].fileno() == -1


def test_exception_from_process_request_goes_to_handle_error(make_server: Any) -> None:
    class Server(HookServer):
        fail = True

        def process_request(self, request: Any, client_address: Any) -> None:
            if self.fail:
                self.fail = False
                self._record("process_request failing", request, client_address)
                raise ValueError("process_request failed")
            super().process_request(request, client_address)

    server = make_server(Server, RecordingHandler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
        client_address = client.getsockname()
    assert server.calls[2:] == [
        "get_request",
        "verify_request",
        "process_request failing",
        "handle_error",
        "shutdown_request",
        "close_request",
    ]
    assert server.addresses[-1] == client_address
    # the server goes on serving
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"again\n")
        server.handle_request()
        assert recv_until_eof(client) == b"AGAIN\n"


def test_exception_from_handler_goes_to_handle_error_with_exc_info(make_server: Any) -> None:
    seen: list[Any] = []

    class Server(HookServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            super().handle_error(request, client_address)
            seen.append(sys.exc_info()[1])

    class Failing(netserve.BaseRequestHandler):
        def handle(self) -> None:
            raise KeyError("from the handler")

    server = make_server(Server, Failing)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
    assert server.calls[-3:] == ["handle_error", "shutdown_request", "close_request"]
    assert len(seen) == 1
    assert isinstance(seen[0], KeyError)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_system_exit_and_keyboard_interrupt_propagate_from_handle_request(
    make_server: Any, exc_type: type[BaseException]
) -> None:
    class Exiting(netserve.BaseRequestHandler):
        def handle(self) -> None:
            raise exc_type("stop")

    server = make_server(HookServer, Exiting)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        with pytest.raises(exc_type):
            server.handle_request()
        assert recv_until_eof(client) == b""  # the request was still shut down
    assert "handle_error" not in server.calls
    assert server.calls[-2:] == ["shutdown_request", "close_request"]


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_system_exit_and_keyboard_interrupt_propagate_from_serve_forever(
    make_server: Any, exc_type: type[BaseException]
) -> None:
    class Exiting(netserve.StreamRequestHandler):
        def handle(self) -> None:
            if self.rfile.readline() == b"exit\n":
                raise exc_type("stop")
            self.wfile.write(b"served\n")

    server = make_server(HookServer, Exiting)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"exit\n")
        with pytest.raises(exc_type):
            server.serve_forever(poll_interval=0.01)  # in this thread: the client is queued
        assert recv_until_eof(client) == b""
    assert "handle_error" not in server.calls
    # the loop is left in a state where it can run again
    with run_server(server, poll_interval=0.01) as address:
        assert request(address, b"again\n") == b"served\n"


# --- handle_request and timeouts -------------------------------------------------------------


def test_handle_request_serves_one_pending_request(make_server: Any) -> None:
    server = make_server(HookServer)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"one\n")
        server.handle_request()
        assert recv_until_eof(client) == b"ONE\n"
    assert "handle_timeout" not in server.calls


@pytest.mark.parametrize(
    ("server_timeout", "socket_timeout"),
    [(0.05, None), (None, 0.05), (30.0, 0.05), (0.05, 30.0)],
    ids=["server-timeout", "socket-timeout", "socket-smaller", "server-smaller"],
)
def test_handle_request_times_out_and_calls_handle_timeout(
    make_server: Any, server_timeout: float | None, socket_timeout: float | None
) -> None:
    server = make_server(HookServer)
    server.timeout = server_timeout
    server.socket.settimeout(socket_timeout)
    start = time.monotonic()
    server.handle_request()
    elapsed = time.monotonic() - start
    assert server.calls[2:] == ["handle_timeout"]
    assert 0.045 <= elapsed < 2.0  # the smaller of the two timeouts, not the larger


def test_timeout_does_not_apply_to_serve_forever(make_server: Any) -> None:
    server = make_server(HookServer)
    server.timeout = 0.01
    with run_server(server, poll_interval=0.01) as address:
        assert request(address) == b"PING\n"
    assert "handle_timeout" not in server.calls


# --- serve_forever, service_actions, shutdown ---------------------------------------------------


def test_serve_forever_serves_clients_one_after_another(make_server: Any) -> None:
    server = make_server()
    with run_server(server) as address:
        for i in range(10):
            assert request(address, b"client %d\n" % i) == b"CLIENT %d\n" % i


class ActionServer(netserve.TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.actions = 0
        self.acted = threading.Event()
        self.wanted = 3
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        self.actions += 1
        if self.actions >= self.wanted:
            self.acted.set()


def test_service_actions_runs_every_poll_interval_when_idle(make_server: Any) -> None:
    server = make_server(ActionServer)
    with run_server(server, poll_interval=0.01):
        assert server.acted.wait(WAIT)


def test_service_actions_runs_after_each_request(make_server: Any) -> None:
    server = make_server(ActionServer)
    server.wanted = 1
    with run_server(server, poll_interval=5):
        assert request(server.server_address) == b"PING\n"
        # well before the 5 s poll interval: the loop calls it after handling the request
        assert server.acted.wait(2.0)


def test_shutdown_is_immediate_whatever_the_poll_interval(make_server: Any) -> None:
    # The stdlib polls: shutdown() takes up to poll_interval (5 s here). netserve wakes the
    # loop at once. One slow measurement can come from the machine (a descheduled thread);
    # a polling loop would be slow on every attempt, so the best of three is what counts.
    durations: list[float] = []
    for _ in range(3):
        server = make_server()
        thread = start_serving(server, poll_interval=5)
        assert request(server.server_address) == b"PING\n"  # the loop is running
        start = time.monotonic()
        server.shutdown()
        thread.join(WAIT)
        durations.append(time.monotonic() - start)
        assert not thread.is_alive()
        if durations[-1] < SHUTDOWN_LATENCY:
            break
    assert min(durations) < SHUTDOWN_LATENCY, durations


def test_shutdown_wakes_serve_forever_without_poll_interval(make_server: Any) -> None:
    server = make_server()
    thread = start_serving(server, poll_interval=None)  # select() without a timeout
    assert request(server.server_address) == b"PING\n"
    server.shutdown()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_shutdown_from_inline_handler_does_not_deadlock(make_server: Any) -> None:
    class Stopping(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.server.shutdown()  # in the thread running serve_forever()
            self.wfile.write(b"stopping\n")

    server = make_server(handler=Stopping)
    thread = start_serving(server, poll_interval=5)
    assert request(server.server_address) == b"stopping\n"  # shutdown() returned
    thread.join(WAIT)
    assert not thread.is_alive()  # and serve_forever() returned after that request


def test_shutdown_before_serve_forever_starts_still_stops_it(make_server: Any) -> None:
    server = make_server()
    stopped = threading.Event()

    def stop() -> None:
        server.shutdown()
        stopped.set()

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    # shutdown() waits for serve_forever() to stop; none has started yet
    assert not stopped.wait(0.2)
    serving = start_serving(server, poll_interval=5)
    serving.join(WAIT)
    assert not serving.is_alive()
    assert stopped.wait(WAIT)
    stopper.join(WAIT)


def test_serve_forever_can_run_again_after_shutdown(make_server: Any) -> None:
    server = make_server()
    for round_ in range(3):
        thread = start_serving(server, poll_interval=5)
        assert request(server.server_address, b"round %d\n" % round_) == b"ROUND %d\n" % round_
        server.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()


@needs_proc_fd
def test_descriptors_flat_after_500_requests(make_server: Any) -> None:
    server = make_server()
    with run_server(server) as address:
        assert request(address) == b"PING\n"
        before = open_fd_count()
        for _ in range(500):
            assert request(address) == b"PING\n"
        after = open_fd_count()
    # the last request's socket may still be closing in the serving thread
    assert after - before <= 2, (before, after)


@pytest.mark.parametrize("override", [None, "close_request", "shutdown_request"])
def test_finished_requests_are_not_kept_even_with_overridden_close_hooks(
    make_server: Any, override: str | None
) -> None:
    # The stdlib lists shutdown_request() and close_request() among the methods to
    # override; one that closes the socket itself, without super(), is stdlib-correct and
    # must not make the server hold on to every request it has served.
    refs: list[weakref.ref[Any]] = []

    class Handler(netserve.BaseRequestHandler):
        def handle(self) -> None:
            refs.append(weakref.ref(self.request))

    class Server(netserve.TCPServer):
        pass

    if override is not None:
        setattr(Server, override, lambda self, request: request.close())
    server = make_server(Server, Handler)
    for _ in range(20):
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            server.handle_request()
            assert recv_until_eof(client) == b""
    gc.collect()
    assert len(refs) == 20
    assert sum(ref() is not None for ref in refs) == 0


# --- handle_error -----------------------------------------------------------------------------


class Boom(netserve.BaseRequestHandler):
    def handle(self) -> None:
        raise ValueError("boom 42")


def test_handle_error_logs_traceback_and_client_address(
    make_server: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    server = make_server(handler=Boom)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client_host, client_port = client.getsockname()
        server.handle_request()
        assert recv_until_eof(client) == b""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    record = errors[0]
    assert record.name == "netserve" or record.name.startswith("netserve.")
    assert record.levelno == logging.ERROR
    assert f"{client_host}:{client_port}" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert "Traceback" in caplog.text
    assert "boom 42" in caplog.text
    assert capsys.readouterr() == ("", "")


def test_handle_error_override_is_called_instead(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    server = make_server(HookServer, Boom)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
        client_address = client.getsockname()
    assert "handle_error" in server.calls
    assert server.addresses[-1] == client_address
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- errors from accept() ---------------------------------------------------------------------


def failing_get_request(server: Any, errno_: int, failures: int) -> list[float]:
    """Make *server*'s get_request raise OSError(errno_) *failures* times, then work; return
    the list of call times."""
    calls: list[float] = []
    real_get_request = server.get_request

    def get_request() -> tuple[Any, Any]:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise OSError(errno_, os.strerror(errno_))
        return real_get_request()

    server.get_request = get_request
    return calls


@pytest.mark.parametrize("errno_", [errno.EMFILE, errno.ENFILE])
def test_accept_resource_error_backs_off_warns_once_and_keeps_serving(
    make_server: Any, caplog: pytest.LogCaptureFixture, errno_: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    server = make_server()
    failures = 4
    calls = failing_get_request(server, errno_, failures)
    with run_server(server, poll_interval=0.01) as address:
        start = time.monotonic()
        assert request(address, b"first\n") == b"FIRST\n"  # served once accept() works
        elapsed = time.monotonic() - start
        assert request(address, b"next\n") == b"NEXT\n"
    assert len(calls) == failures + 2
    # not a busy loop: accepting pauses after each resource error
    gaps = [b - a for a, b in itertools.pairwise(calls[: failures + 1])]
    assert min(gaps) >= ACCEPT_BACKOFF * 0.9, gaps
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 1 + int(elapsed), [r.getMessage() for r in warnings]
    assert all(r.name.startswith("netserve") for r in warnings)
    assert os.strerror(errno_) in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_accept_connection_aborted_is_ignored_without_warning(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    server = make_server()
    calls = failing_get_request(server, errno.ECONNABORTED, 3)
    with run_server(server, poll_interval=0.01) as address:
        assert request(address, b"first\n") == b"FIRST\n"
        assert request(address, b"next\n") == b"NEXT\n"
    assert len(calls) == 5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- BaseServer on its own ---------------------------------------------------------------------


class ListenerServer(netserve.BaseServer):
    """A BaseServer over a listening socket it did not create: only fileno and get_request."""

    def __init__(self, listener: socket.socket, handler: Any) -> None:
        super().__init__(listener.getsockname(), handler)
        self.socket = listener

    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        return self.socket.accept()


def test_base_server_defaults_leave_requests_and_socket_alone() -> None:
    kept: list[socket.socket] = []

    class Keeping(netserve.BaseRequestHandler):
        def handle(self) -> None:
            kept.append(self.request)
            self.request.sendall(b"hi")

    with socket.create_server((HOST, 0)) as listener:
        server = ListenerServer(listener, Keeping)
        assert server.timeout is None
        server.server_activate()  # does nothing
        with socket.create_connection(listener.getsockname(), timeout=WAIT) as client:
            server.handle_request()
            assert client.recv(2) == b"hi"
        # BaseServer.shutdown_request/close_request do not close the request
        assert len(kept) == 1
        assert kept[0].fileno() != -1
        kept[0].close()
        server.server_close()  # does nothing either
        assert listener.fileno() != -1


def test_base_server_subclass_runs_serve_forever() -> None:
    with socket.create_server((HOST, 0)) as listener:

        class Closing(ListenerServer):
            def shutdown_request(self, request: Any) -> None:
                request.close()

        server = Closing(listener, UpperHandler)
        with run_server(server, poll_interval=0.01) as address:
            assert request(address, b"base\n") == b"BASE\n"


# --- UDP and Unix servers -------------------------------------------------------------------------


def udp_exchange(address: Any, payload: bytes, family: int = socket.AF_INET) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(payload, address)
        return client.recv(65536)


def test_udp_server_answers_datagrams(make_server: Any) -> None:
    server = make_server(netserve.UDPServer, UpperDatagramHandler)
    assert server.socket.type == socket.SOCK_DGRAM == server.socket_type
    assert server.server_address[1] != 0
    with run_server(server) as address:
        for i in range(5):
            assert udp_exchange(address, b"datagram %d" % i) == b"DATAGRAM %d" % i


def test_udp_get_request_returns_data_and_server_socket(make_server: Any) -> None:
    server = make_server(netserve.UDPServer, UpperDatagramHandler)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"raw", server.server_address)
        (data, sock), client_address = server.get_request()
        client_port = client.getsockname()[1]
    assert data == b"raw"
    assert sock is server.socket
    assert client_address == (HOST, client_port)


def test_udp_max_packet_size_truncates_datagrams(make_server: Any) -> None:
    sizes: list[int] = []

    class Small(netserve.UDPServer):
        max_packet_size = 16

    class Measuring(netserve.DatagramRequestHandler):
        def handle(self) -> None:
            sizes.append(len(self.packet))

    server = make_server(Small, Measuring)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(b"x" * 100, server.server_address)
        server.handle_request()
        client.recv(65536)
    assert sizes == [16]


def test_udp_requests_do_not_close_the_server_socket(make_server: Any) -> None:
    server = make_server(netserve.UDPServer, UpperDatagramHandler)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        for payload in (b"a", b"b"):
            client.sendto(payload, server.server_address)
            server.handle_request()
            assert client.recv(100) == payload.upper()
            assert server.fileno() != -1


def test_udp_handle_request_times_out(make_server: Any) -> None:
    class Server(netserve.UDPServer):
        timeout = 0.05
        timed_out = 0

        def handle_timeout(self) -> None:
            self.timed_out += 1

    server = make_server(Server, UpperDatagramHandler)
    server.handle_request()
    assert server.timed_out == 1


def test_unix_stream_server(make_server: Any, unix_dir: str) -> None:
    path = os.path.join(unix_dir, "stream.sock")
    addresses: list[Any] = []

    class Handler(UpperHandler):
        def handle(self) -> None:
            addresses.append(self.client_address)
            super().handle()

    server = make_server(netserve.UnixStreamServer, Handler, address=path)
    assert server.address_family == socket.AF_UNIX
    assert server.socket.family == socket.AF_UNIX
    assert server.server_address == path
    with run_server(server) as address:
        assert request(address, b"unix\n", socket.AF_UNIX) == b"UNIX\n"
    assert addresses in ([""], [b""])  # an unnamed client socket
    assert server.fileno() == -1


def test_unix_datagram_server(make_server: Any, unix_dir: str) -> None:
    path = os.path.join(unix_dir, "dgram.sock")
    client_path = os.path.join(unix_dir, "client.sock")
    server = make_server(netserve.UnixDatagramServer, UpperDatagramHandler, address=path)
    assert server.socket.family == socket.AF_UNIX
    assert server.socket.type == socket.SOCK_DGRAM
    assert server.server_address == path
    with run_server(server) as address, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.bind(client_path)  # so that the reply has somewhere to go
        c.settimeout(WAIT)
        c.sendto(b"unix datagram", address)
        assert c.recv(100) == b"UNIX DATAGRAM"


def test_repr_names_class_and_address(make_server: Any) -> None:
    server = make_server()
    text = repr(server)
    assert "TCPServer" in text
    assert str(server.server_address[1]) in text


# --- accepting in batches ----------------------------------------------------------------------


def test_only_a_thread_pool_on_a_non_blocking_listener_accepts_in_batches() -> None:
    handler = netserve.StreamRequestHandler
    pool = netserve.ThreadPool(max_workers=2)
    servers = {
        "pool": netserve.TCPServer(("127.0.0.1", 0), handler, concurrency=pool),
        "pool, blocking listener": netserve.ThreadPoolTCPServer(("127.0.0.1", 0), handler),
        "thread per request": netserve.ThreadingTCPServer(("127.0.0.1", 0), handler),
        "forks": netserve.ForkingTCPServer(("127.0.0.1", 0), handler),
        "inline": netserve.TCPServer(("127.0.0.1", 0), handler),
    }
    try:
        for name, server in servers.items():
            server.socket.setblocking(name == "pool, blocking listener")
        # a forking server enforces max_children only between turns of its loop, a thread
        # per request has no bound, and a blocking listener would block: one per wakeup
        assert {name: server._batches_accepts() for name, server in servers.items()} == {
            "pool": True,
            "pool, blocking listener": False,
            "thread per request": False,
            "forks": False,
            "inline": False,
        }
    finally:
        for server in servers.values():
            server.server_close()
        pool.close()


def test_a_connection_taken_by_another_worker_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # workers share the listener: when another one accepted first, accept() finds nothing
    caplog.set_level(logging.DEBUG, logger="netserve")
    pool = netserve.ThreadPool(max_workers=1)
    server = netserve.TCPServer(("127.0.0.1", 0), netserve.StreamRequestHandler, concurrency=pool)
    try:
        server.socket.setblocking(False)
        assert server._handle_request_noblock() is False
        # (other tests' servers may still log from their threads: look at this one's only)
        assert not [r for r in caplog.records if str(server) in r.getMessage()]
    finally:
        server.server_close()
        pool.close()
