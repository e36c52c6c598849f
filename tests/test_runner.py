"""``_runner``: loading MODULE:HANDLER, binding all addresses or none, the servers built from a
``Config`` (pool, limits), ``ServerGroup`` (graceful and fast stops, socket files), and
``run()``/``serve()`` in a subprocess, stopped by signals.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import netserve
from netserve import BindError, ConfigError, HandlerImportError, NetserveError, _runner
from netserve._runner import Listener, ServerGroup, build_servers, load_handler, open_listeners
from netserve.config import Config
from netserve.demo import ReverseHandler, SeedHandler

from .test_cli import ServerProcess, parse_host_port

pytestmark = pytest.mark.timeout(30)

IO_TIMEOUT = 5.0
JOIN_TIMEOUT = 5.0
#: How long a graceful stop is watched to check that it waits for a request in flight.
DRAIN_CHECK = 1.0

HANDLER_MODULE = """
import socketserver

import netserve


class Good(netserve.StreamRequestHandler):
    pass


class Outer:
    class Inner(netserve.BaseRequestHandler):
        pass


class NotAHandler:
    pass


class StdlibHandler(socketserver.BaseRequestHandler):
    pass


def function():
    pass


instance = Good.__new__(Good)
"""

_module_numbers = itertools.count()


@pytest.fixture
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh importable module (on sys.path for this test only); yields its name."""
    name = f"netserve_test_handlers_{os.getpid()}_{next(_module_numbers)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(HANDLER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def listening_blocker() -> Iterator[int]:
    """A loopback port held by a listening socket (so even SO_REUSEADDR cannot bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


# --- load_handler --------------------------------------------------------------------------


def test_load_handler_demo() -> None:
    assert load_handler("netserve.demo:ReverseHandler") is ReverseHandler
    assert load_handler("netserve.demo:SeedHandler") is SeedHandler


def test_load_handler_from_a_user_module(handler_module: str) -> None:
    good = load_handler(f"{handler_module}:Good")
    assert good.__name__ == "Good"
    assert issubclass(good, netserve.StreamRequestHandler)


def test_load_handler_dotted_attribute(handler_module: str) -> None:
    inner = load_handler(f"{handler_module}:Outer.Inner")
    assert inner.__qualname__ == "Outer.Inner"


def test_load_handler_missing_module() -> None:
    with pytest.raises(HandlerImportError, match="netserve_no_such_module") as error:
        load_handler("netserve_no_such_module:Handler")
    assert isinstance(error.value, ImportError)
    assert isinstance(error.value, NetserveError)


def test_load_handler_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"netserve_test_broken_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(HandlerImportError, match="broken on purpose"):
            load_handler(f"{name}:Handler")
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("attr", ["Missing", "Outer.Missing", "Good.Missing.Deeper"])
def test_load_handler_missing_attribute(handler_module: str, attr: str) -> None:
    with pytest.raises(HandlerImportError, match=f"no attribute '{attr}'"):
        load_handler(f"{handler_module}:{attr}")


def test_load_handler_takes_a_stdlib_socketserver_handler(handler_module: str) -> None:
    # a handler written for socketserver (http.server's, a third party's) is served as is
    assert load_handler(f"{handler_module}:StdlibHandler").__name__ == "StdlibHandler"


@pytest.mark.parametrize("attr", ["NotAHandler", "function", "instance"])
def test_load_handler_not_a_handler_class(handler_module: str, attr: str) -> None:
    with pytest.raises(HandlerImportError, match="is not a request handler class"):
        load_handler(f"{handler_module}:{attr}")


@pytest.mark.parametrize("spec", ["netserve.demo", "netserve.demo:", ":ReverseHandler", ":"])
def test_load_handler_malformed_spec(spec: str) -> None:
    with pytest.raises(HandlerImportError, match="MODULE:HANDLER"):
        load_handler(spec)


# --- open_listeners ------------------------------------------------------------------------


def close_listeners(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.socket.close()
        if listener.endpoint.family == socket.AF_UNIX:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(listener.endpoint.address))


def is_listening(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def reuses_address(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


def test_open_listeners_binds_every_address(sock_dir: Path) -> None:
    path = sock_dir / "l.sock"
    config = Config(bind=("127.0.0.1:0", "127.0.0.1:0", f"unix:{path}"))
    listeners = open_listeners(config)
    try:
        assert [listener.endpoint for listener in listeners] == config.endpoints()
        tcp1, tcp2, unix = (listener.socket for listener in listeners)
        assert tcp1.getsockname()[1] != 0
        assert tcp1.getsockname() != tcp2.getsockname()
        assert unix.getsockname() == str(path)
        assert path.is_socket()
        for sock in (tcp1, tcp2, unix):
            assert sock.type == socket.SOCK_STREAM
            assert is_listening(sock)
        assert reuses_address(tcp1), "a restarted server must not wait for TIME_WAIT"
        with socket.create_connection(tcp1.getsockname(), timeout=IO_TIMEOUT):
            pass  # listening from now on: the kernel completes the handshake
    finally:
        close_listeners(listeners)


def test_open_listeners_udp(sock_dir: Path) -> None:
    path = sock_dir / "u.sock"
    listeners = open_listeners(Config(bind=("127.0.0.1:0", f"unix:{path}"), udp=True))
    try:
        for listener in listeners:
            assert listener.socket.type == socket.SOCK_DGRAM
            assert not is_listening(listener.socket)
        assert not reuses_address(listeners[0].socket)
        assert listeners[0].socket.getsockname()[1] != 0
    finally:
        close_listeners(listeners)


@pytest.fixture
def recorded_sockets(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """Every socket ``open_listeners`` opens, in order."""
    opened: list[socket.socket] = []
    real_open = _runner._open

    def recording_open(*args: Any) -> socket.socket:
        sock = real_open(*args)
        opened.append(sock)
        return sock

    monkeypatch.setattr(_runner, "_open", recording_open)
    return opened


@pytest.mark.parametrize(
    "opener",
    [open_listeners, lambda config: build_servers(config, SeedHandler)],
    ids=["open_listeners", "build_servers"],
)
def test_binding_is_all_or_none(
    listening_blocker: int,
    recorded_sockets: list[socket.socket],
    opener: Callable[[Config], object],
) -> None:
    busy = f"127.0.0.1:{listening_blocker}"
    with pytest.raises(BindError) as error:
        opener(Config(bind=("127.0.0.1:0", "127.0.0.1:0", busy)))
    assert busy in str(error.value)
    assert error.value.errno == errno.EADDRINUSE
    assert isinstance(error.value, OSError)
    assert len(recorded_sockets) == 2
    assert all(sock.fileno() == -1 for sock in recorded_sockets), (
        "the sockets bound first are closed"
    )


@pytest.mark.parametrize(
    "opener",
    [open_listeners, lambda config: build_servers(config, SeedHandler)],
    ids=["open_listeners", "build_servers"],
)
def test_binding_all_or_none_removes_unix_socket_files(
    listening_blocker: int, sock_dir: Path, opener: Callable[[Config], object]
) -> None:
    path = sock_dir / "first.sock"
    with pytest.raises(BindError):
        opener(Config(bind=(f"unix:{path}", f"127.0.0.1:{listening_blocker}")))
    assert not path.exists()


def test_bind_error_names_an_address_not_available() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine
    with pytest.raises(BindError) as error:
        open_listeners(Config(bind=("192.0.2.1:0",)))
    assert "192.0.2.1:0" in str(error.value)
    assert error.value.errno == errno.EADDRNOTAVAIL


def test_bind_error_message_is_plain(listening_blocker: int) -> None:
    with pytest.raises(BindError) as error:
        build_servers(Config(bind=(f"127.0.0.1:{listening_blocker}",)), SeedHandler)
    assert str(error.value).startswith("cannot listen on ")


# --- build_servers ---------------------------------------------------------------------------


def close_all(servers: list[netserve.TCPServer]) -> None:
    for server in servers:
        server.block_on_close = False  # nothing to wait for in these tests
        _runner.close_server(server)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before]


def test_build_servers_binds_every_address(sock_dir: Path) -> None:
    path = sock_dir / "s.sock"
    config = Config(bind=("127.0.0.1:0", "127.0.0.1:0", f"unix:{path}"), threads=3)
    before = set(threading.enumerate())
    servers = build_servers(config, SeedHandler)
    try:
        assert len(servers) == 3
        tcp1, tcp2, unix = servers
        assert tcp1.server_address[1] != 0
        assert tcp1.server_address != tcp2.server_address
        assert isinstance(tcp1, netserve.TCPServer)
        assert not isinstance(tcp1, netserve.ThreadingMixIn), "a bounded pool, not the mixin"
        assert isinstance(unix, netserve.UnixStreamServer)
        assert unix.server_address == str(path)
        assert reuses_address(tcp1.socket)
        assert path.exists()
        pool = new_threads(before)
        assert len(pool) == 3 * config.threads, "each server has its own pool, started up front"
        assert all(thread.daemon for thread in pool), "pool threads never keep the process alive"
    finally:
        close_all(servers)


def test_build_servers_udp(sock_dir: Path) -> None:
    path = sock_dir / "d.sock"
    servers = build_servers(Config(bind=("127.0.0.1:0", f"unix:{path}"), udp=True), SeedHandler)
    try:
        udp, unix = servers
        assert isinstance(udp, netserve.UDPServer)
        assert isinstance(unix, netserve.UnixDatagramServer)
        assert udp.socket.type == socket.SOCK_DGRAM
        assert not reuses_address(udp.socket)
    finally:
        close_all(servers)


@pytest.mark.parametrize(
    ("handler", "udp", "expected"),
    [
        (ReverseHandler, True, "is a stream handler"),
        (socketserver.StreamRequestHandler, True, "is a stream handler"),
        (netserve.DatagramRequestHandler, False, "is a datagram handler"),
        (socketserver.DatagramRequestHandler, False, "is a datagram handler"),
    ],
)
def test_build_servers_rejects_a_handler_for_the_other_transport(
    recorded_sockets: list[socket.socket], handler: type, udp: bool, expected: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^udp: {handler.__qualname__} {expected}"):
        build_servers(Config(bind=("127.0.0.1:0",), udp=udp), handler)
    assert recorded_sockets == [], "checked before anything is bound"


def test_build_servers_on_listeners_opened_before(recorded_sockets: list[socket.socket]) -> None:
    config = Config(bind=("127.0.0.1:0", "127.0.0.1:0"))
    listeners = open_listeners(config)
    servers = build_servers(config, SeedHandler, listeners)
    try:
        assert len(recorded_sockets) == 2, "build_servers opens nothing more"
        for server, listener in zip(servers, listeners, strict=True):
            assert server.socket is listener.socket
            assert server.server_address == listener.socket.getsockname()
        group = ServerGroup(servers)
        thread = _serving(group)
        try:
            for server in servers:
                assert request_line(server.server_address, b"abc") == b"cba\n"
        finally:
            _stop(group, thread)
    finally:
        close_all(servers)
    assert all(listener.socket.fileno() == -1 for listener in listeners)


# --- stale Unix socket files ---------------------------------------------------------------


def test_stale_unix_socket_file_is_removed(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))  # closing leaves the file: a server that died did the same
    assert path.is_socket()
    caplog.set_level(logging.INFO, logger="netserve")
    servers = build_servers(Config(bind=(f"unix:{path}",)), SeedHandler)
    try:
        assert servers[0].server_address == str(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(IO_TIMEOUT)
            client.connect(str(path))  # the new server listens there
    finally:
        close_all(servers)
    assert f"removed stale socket file {path}" in caplog.messages


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["stream", "dgram"])
def test_live_unix_socket_is_not_removed(sock_dir: Path, kind: socket.SocketKind) -> None:
    path = sock_dir / "live.sock"
    with socket.socket(socket.AF_UNIX, kind) as live:
        live.bind(str(path))
        if kind == socket.SOCK_STREAM:
            live.listen()
        with pytest.raises(BindError, match=r"live\.sock"):
            build_servers(Config(bind=(f"unix:{path}",)), SeedHandler)
        assert path.is_socket()
        if kind == socket.SOCK_STREAM:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(IO_TIMEOUT)
                client.connect(str(path))  # still the live server's socket


def test_a_live_unix_socket_with_a_full_backlog_is_in_use_not_a_hang(sock_dir: Path) -> None:
    path = sock_dir / "busy.sock"
    clients: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(0)  # a stuck server: it never accepts
        try:
            for _ in range(64):  # fill its backlog
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(client)
                client.setblocking(False)
                try:
                    client.connect(str(path))
                except BlockingIOError:
                    break
            else:
                pytest.fail("the backlog of a Unix socket never filled")
            with pytest.raises(BindError, match=r"busy\.sock"):
                build_servers(Config(bind=(f"unix:{path}",)), SeedHandler)
            assert path.is_socket()
        finally:
            for client in clients:
                client.close()


def test_regular_file_is_not_removed(sock_dir: Path) -> None:
    path = sock_dir / "data.txt"
    path.write_text("keep me")
    with pytest.raises(BindError, match=r"data\.txt"):
        build_servers(Config(bind=(f"unix:{path}",)), SeedHandler)
    assert path.read_text() == "keep me"


# --- the requests: logged, on a pool or a thread each ----------------------------------------


class Boom(netserve.BaseRequestHandler):
    def handle(self) -> None:
        raise RuntimeError("boom")


def _serving(group: ServerGroup) -> threading.Thread:
    thread = threading.Thread(target=group.serve, name="server group", daemon=True)
    thread.start()
    return thread


def _stop(group: ServerGroup, thread: threading.Thread, *, graceful: bool = True) -> None:
    group.stop(graceful)
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "ServerGroup.serve() did not return after stop()"


def connect(address: Any) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_line(sock: socket.socket) -> bytes:
    """Read up to a newline or EOF (b"" when the server closed without a word)."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            break
        data += chunk
    return data


def request_line(address: Any, line: bytes) -> bytes:
    """One line on a new connection: the reply line (SeedHandler, ReverseHandler, Gate)."""
    with connect(address) as sock:
        sock.sendall(line + b"\n")
        return read_line(sock)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed *sock* without a word (waits up to the socket's timeout)."""
    return read_line(sock) == b""


@pytest.mark.parametrize(
    ("handler", "outcome"), [(SeedHandler, "closed"), (Boom, "failed")], ids=["ok", "raises"]
)
def test_each_request_is_logged_once_when_it_ends(
    caplog: pytest.LogCaptureFixture, handler: type[netserve.BaseRequestHandler], outcome: str
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    group = ServerGroup(build_servers(Config(bind=("127.0.0.1:0",)), handler))
    address = group.servers[0].server_address
    thread = _serving(group)
    try:
        with socket.create_connection(address, timeout=IO_TIMEOUT) as client:
            port = client.getsockname()[1]
            if handler is SeedHandler:  # Boom reads nothing: unread data would mean a reset
                client.sendall(b"hi\n")
                assert client.recv(1024) == b"ih\n"
            # EOF: the server has closed the request, which it does after logging it
            assert client.recv(1024) == b""
    finally:
        _stop(group, thread)
    peer = f"127.0.0.1:{port} "
    logged = [m for m in caplog.messages if m.startswith(peer)]
    assert len(logged) == 1, caplog.messages
    assert logged[0].startswith(f"{peer}{outcome} after ")
    assert logged[0].endswith(" ms")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    if outcome == "failed":
        assert len(errors) == 1
        assert errors[0].exc_info is not None
        assert f"127.0.0.1:{port}" in errors[0].getMessage()
    else:
        assert errors == []


class Started:
    """A record of the handlers that began, to wait on from the test."""

    def __init__(self) -> None:
        self.threads: queue.Queue[threading.Thread] = queue.Queue()

    def wait(self, count: int = 1) -> list[threading.Thread]:
        return [self.threads.get(timeout=IO_TIMEOUT) for _ in range(count)]

    def handler(self) -> type[netserve.StreamRequestHandler]:
        started = self.threads

        class Gate(netserve.StreamRequestHandler):
            """Records its thread, then answers ``done LINE`` once the client sends a line."""

            def handle(self) -> None:
                started.put(threading.current_thread())
                line = self.rfile.readline()
                self.wfile.write(b"done " + line)

        return Gate


def test_threads_zero_serves_each_connection_in_a_new_thread() -> None:
    clients = 6
    barrier = threading.Barrier(clients, timeout=IO_TIMEOUT)
    threads: list[threading.Thread] = []

    class Together(netserve.StreamRequestHandler):
        """Answers only once *clients* handlers run at the same time."""

        def handle(self) -> None:
            threads.append(threading.current_thread())
            barrier.wait()
            self.wfile.write(self.rfile.readline())

    before = set(threading.enumerate())
    servers = build_servers(Config(bind=("127.0.0.1:0",), threads=0), Together)
    assert new_threads(before) == [], "no pool: nothing is started up front"
    group = ServerGroup(servers)
    serving = _serving(group)
    try:
        socks = [connect(servers[0].server_address) for _ in range(clients)]
        try:
            for n, sock in enumerate(socks):
                sock.sendall(b"%d\n" % n)
            for n, sock in enumerate(socks):
                assert read_line(sock) == b"%d\n" % n
        finally:
            for sock in socks:
                sock.close()
    finally:
        _stop(group, serving)
    assert len(set(threads)) == clients, "a thread for each connection"
    assert not set(threads) & before
    assert all(thread.daemon for thread in threads), "a fast stop never waits for them"


def test_each_server_has_its_own_bounded_pool() -> None:
    started = Started()
    config = Config(bind=("127.0.0.1:0", "127.0.0.1:0"), threads=1, max_queued=0)
    servers = build_servers(config, started.handler())
    group = ServerGroup(servers)
    serving = _serving(group)
    first, second = (server.server_address for server in servers)
    try:
        with connect(first) as a, connect(second) as b:
            a.sendall(b"a ")
            b.sendall(b"b ")
            thread_a, thread_b = started.wait(2)  # both served at once: one pool per server
            assert thread_a is not thread_b
            with connect(first) as refused:
                assert closed_by_server(refused), "the pool of the first server is full"
            assert servers[0].refused["busy"] == 1
            assert servers[1].refused["busy"] == 0
            a.sendall(b"end\n")
            b.sendall(b"end\n")
            assert read_line(a) == b"done a end\n"
            assert read_line(b) == b"done b end\n"
    finally:
        _stop(group, serving)


# --- the limits of the Config reach the servers ----------------------------------------------


def test_limits_reach_every_server(sock_dir: Path) -> None:
    config = Config(
        bind=("127.0.0.1:0", f"unix:{sock_dir / 'limits.sock'}"),
        max_connections=7,
        max_connections_per_ip=3,
        idle_timeout=4.5,
        drain_timeout=6.0,
    )
    servers = build_servers(config, SeedHandler)
    try:
        for server in servers:
            assert server.max_connections == 7
            assert server.max_connections_per_ip == 3
            assert server.idle_timeout == 4.5
            assert server.drain_timeout == 6.0
    finally:
        close_all(servers)


def eventually_served(address: Any, line: bytes, expected: bytes) -> None:
    """Connect until a connection is served (a refused one is retried) within IO_TIMEOUT."""
    deadline = time.monotonic() + IO_TIMEOUT
    reply = b""
    while time.monotonic() < deadline:
        reply = request_line(address, line)
        if reply:
            break
    assert reply == expected


def test_max_connections_refuses_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    servers = build_servers(Config(bind=("127.0.0.1:0",), max_connections=2), ReverseHandler)
    group = ServerGroup(servers)
    serving = _serving(group)
    address = servers[0].server_address
    try:
        with connect(address) as one, connect(address) as two:
            for sock in (one, two):
                sock.sendall(b"ab\n")
                assert read_line(sock) == b"ba\n"
            with connect(address) as third:
                port = third.getsockname()[1]
                started = time.monotonic()
                assert closed_by_server(third)
                assert time.monotonic() - started < IO_TIMEOUT
            assert servers[0].refused["max_connections"] == 1
            two.sendall(b"still served\n")
            assert read_line(two) == b"devres llits\n"
        eventually_served(address, b"room again", b"niaga moor\n")
    finally:
        _stop(group, serving)
    assert f"refused connection from 127.0.0.1:{port}: max_connections (1 refused so far)" in (
        caplog.messages
    )


def test_max_connections_per_ip_counts_each_address() -> None:
    servers = build_servers(Config(bind=("127.0.0.1:0",), max_connections_per_ip=1), ReverseHandler)
    group = ServerGroup(servers)
    serving = _serving(group)
    address = servers[0].server_address
    try:
        with connect(address) as first:
            first.sendall(b"ab\n")
            assert read_line(first) == b"ba\n"
            with connect(address) as same_ip:
                assert closed_by_server(same_ip)
            assert servers[0].refused["max_connections_per_ip"] == 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_ip:
                other_ip.settimeout(IO_TIMEOUT)
                other_ip.bind(("127.0.0.2", 0))  # all of 127/8 is loopback on Linux
                other_ip.connect(address)
                other_ip.sendall(b"xy\n")
                assert read_line(other_ip) == b"yx\n"
    finally:
        _stop(group, serving)


def test_idle_timeout_closes_a_silent_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    servers = build_servers(Config(bind=("127.0.0.1:0",), idle_timeout=0.3), ReverseHandler)
    group = ServerGroup(servers)
    serving = _serving(group)
    try:
        with connect(servers[0].server_address) as sock:
            port = sock.getsockname()[1]
            sock.sendall(b"ab\n")
            assert read_line(sock) == b"ba\n"
            quiet_since = time.monotonic()
            assert closed_by_server(sock)
            assert time.monotonic() - quiet_since >= 0.25, "not before the idle timeout"
    finally:
        _stop(group, serving)
    assert f"closed connection from 127.0.0.1:{port}: idle for 0.3 s" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- ServerGroup -----------------------------------------------------------------------------


def test_server_group_serves_until_stopped(sock_dir: Path) -> None:
    path = sock_dir / "group.sock"
    servers = build_servers(Config(bind=("127.0.0.1:0", f"unix:{path}")), SeedHandler)
    group = ServerGroup(servers)
    tcp_address = servers[0].server_address
    thread = _serving(group)
    try:
        # the servers listen from construction: a client may connect before serve() runs
        assert request_line(tcp_address, b"tcp") == b"pct\n"
        assert request_line(str(path), b"unix") == b"xinu\n"
    finally:
        _stop(group, thread)
    assert all(server.socket.fileno() == -1 for server in servers)
    assert not path.exists(), "the group removes the socket files of its servers"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(tcp_address, timeout=IO_TIMEOUT).close()


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "fast"])
def test_server_group_that_does_not_own_socket_files_leaves_them(
    sock_dir: Path, graceful: bool
) -> None:
    path = sock_dir / "shared.sock"
    servers = build_servers(Config(bind=(f"unix:{path}",)), SeedHandler)
    group = ServerGroup(servers, owns_socket_files=False)
    thread = _serving(group)
    try:
        assert request_line(str(path), b"abc") == b"cba\n"
    finally:
        _stop(group, thread, graceful=graceful)
    try:
        assert servers[0].socket.fileno() == -1, "the socket is closed all the same"
        assert path.is_socket(), "the owner of the socket file removes it, not this group"
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "fast"])
def test_server_group_that_owns_socket_files_removes_them(sock_dir: Path, graceful: bool) -> None:
    path = sock_dir / "own.sock"
    group = ServerGroup(build_servers(Config(bind=(f"unix:{path}",)), SeedHandler))
    thread = _serving(group)
    try:
        assert request_line(str(path), b"abc") == b"cba\n"
    finally:
        _stop(group, thread, graceful=graceful)
    assert not path.exists()


def test_server_group_stop_before_serve_returns_at_once() -> None:
    servers = build_servers(Config(bind=("127.0.0.1:0",)), SeedHandler)
    group = ServerGroup(servers)
    group.stop()
    thread = _serving(group)
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    assert servers[0].socket.fileno() == -1


def test_server_group_first_stop_decides_its_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    group = ServerGroup(build_servers(Config(bind=("127.0.0.1:0",)), SeedHandler))
    group.stop(graceful=False)
    group.stop(graceful=True)
    thread = _serving(group)
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    assert "stopping now" in caplog.messages
    assert "stopping gracefully" not in caplog.messages
    group.stop()  # after serve() returned: nothing to do, no error


def test_server_group_fast_stop_does_not_wait_for_requests_in_flight() -> None:
    started = Started()
    servers = build_servers(Config(bind=("127.0.0.1:0",), drain_timeout=30.0), started.handler())
    group = ServerGroup(servers)
    thread = _serving(group)
    with connect(servers[0].server_address) as client:
        client.sendall(b"half a line")
        started.wait()
        began = time.monotonic()
        _stop(group, thread, graceful=False)  # the handler is still reading
        assert time.monotonic() - began < JOIN_TIMEOUT
    assert servers[0].socket.fileno() == -1


@pytest.mark.parametrize(
    "threads",
    [
        2,
        0,
    ],
    ids=["pool", "thread per connection"],
)
def test_server_group_graceful_stop_lets_requests_in_flight_finish(threads: int) -> None:
    started = Started()
    config = Config(bind=("127.0.0.1:0",), threads=threads, drain_timeout=JOIN_TIMEOUT * 4)
    servers = build_servers(config, started.handler())
    address = servers[0].server_address
    group = ServerGroup(servers)
    thread = _serving(group)
    try:
        with connect(address) as client:
            client.sendall(b"first half, ")
            started.wait()
            group.stop(graceful=True)
            wait_until_refused(address)  # no new connections while draining
            thread.join(DRAIN_CHECK)
            assert thread.is_alive(), "serve() returned with a request in flight"
            client.sendall(b"second half\n")
            assert read_line(client) == b"done first half, second half\n"
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "serve() did not return once the request was done"
    finally:
        group.stop(graceful=False)
        thread.join(JOIN_TIMEOUT)


def wait_until_refused(address: tuple[str, int]) -> None:
    """Connect until the connection is refused (the listener is closed), within IO_TIMEOUT."""
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=IO_TIMEOUT).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # the listener closed during the handshake: try again
    pytest.fail(f"{address} still accepts connections {IO_TIMEOUT} s after stop()")


def test_server_group_graceful_stop_closes_what_is_left_after_drain_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    servers = build_servers(Config(bind=("127.0.0.1:0",), drain_timeout=0.3), ReverseHandler)
    group = ServerGroup(servers)
    thread = _serving(group)
    with connect(servers[0].server_address) as client:
        port = client.getsockname()[1]
        client.sendall(b"abc\n")
        assert read_line(client) == b"cba\n"
        began = time.monotonic()
        _stop(group, thread)  # the client stays connected, its handler still reading
        assert time.monotonic() - began >= 0.25, "the request got its drain_timeout"
        assert closed_by_server(client)
    assert any(
        m.startswith(f"closing connection from 127.0.0.1:{port}: still open")
        for m in caplog.messages
    ), caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.messages


# --- run() and serve() -----------------------------------------------------------------------

SERVE_SCRIPT = """
import logging
import os
import signal
import socket
import sys
import threading

import netserve
from netserve.demo import ReverseHandler

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


def own_handler(signum, frame):
    os.write(2, b"own SIGTERM handler\\n")  # one write: no lock, no interleaving
    os._exit(7)


signal.signal(signal.SIGTERM, own_handler)
# a signal may reach any thread, and Python runs handlers only in the main thread, which
# may be blocked: the wakeup fd makes sure this script's own handler takes effect
_reader, _writer = socket.socketpair()
_writer.setblocking(False)
signal.set_wakeup_fd(_writer.fileno(), warn_on_full_buffer=False)


def _watch():
    while True:
        if _reader.recv(1) == bytes([signal.SIGTERM]):
            own_handler(signal.SIGTERM, None)


threading.Thread(target=_watch, daemon=True).start()
code = netserve.serve({handler}, {address!r}, install_signal_handlers={install}, **{options!r})
restored = signal.getsignal(signal.SIGTERM) is own_handler
os.write(2, f"serve returned {{code}}; own handler restored: {{restored}}\\n".encode())
sys.exit(code)
"""


@pytest.fixture
def start_script(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Run SERVE_SCRIPT with the given arguments in a new interpreter; kill it after."""
    started: list[ServerProcess] = []

    def start(
        address: object,
        *,
        handler: str = "ReverseHandler",
        install: bool = True,
        **options: object,
    ) -> ServerProcess:
        script = tmp_path / f"serve_{len(started)}.py"
        script.write_text(
            SERVE_SCRIPT.format(handler=handler, address=address, install=install, options=options)
        )
        process = ServerProcess([sys.executable, str(script)])
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def test_serve_logs_its_mode_and_limits_then_serves_until_sigterm(
    start_script: Callable[..., ServerProcess],
) -> None:
    server = start_script(("127.0.0.1", 0), threads=2, max_connections=5, idle_timeout=3.0)
    host, port = server.tcp_address()
    assert request_line((host, port), b"hello") == b"olleh\n"  # also: signals are handled now
    startup = server.lines[0]
    assert startup.startswith(f"INFO netserve {netserve.__version__}, pid {server.proc.pid}: ")
    for part in ("1 process", "thread pool of 2", "max_connections=5", "idle_timeout=3s"):
        assert part in startup, startup
    assert server.lines[1] == f"INFO serving netserve.demo:ReverseHandler on tcp {host}:{port}"
    code, _ = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr
    assert "INFO stopping gracefully" in server.lines
    assert "serve returned 0; own handler restored: True" in server.lines
    assert "Traceback" not in server.stderr


def test_serve_a_list_of_addresses_and_a_handler_by_name(
    start_script: Callable[..., ServerProcess], sock_dir: Path
) -> None:
    path = sock_dir / "serve.sock"
    server = start_script(
        ["127.0.0.1:0", f"unix:{path}"], handler="'netserve.demo:SeedHandler'", threads=0
    )
    served = dict(server.serving(2))
    assert served["unix"] == str(path)
    assert "a thread per connection" in server.lines[0]
    for address in (parse_host_port(served["tcp"]), str(path)):
        assert request_line(address, b"abc") == b"cba\n"
    code, _ = server.stop(signal.SIGINT)
    assert code == 0, server.stderr
    assert "INFO stopping now" in server.lines
    assert not path.exists()


def test_serve_without_signal_handlers_leaves_them_alone(
    start_script: Callable[..., ServerProcess],
) -> None:
    server = start_script("127.0.0.1:0", install=False)
    address = server.tcp_address()
    assert request_line(address, b"abc") == b"cba\n"
    code, _ = server.stop(signal.SIGTERM)
    assert code == 7, server.stderr
    assert "own SIGTERM handler" in server.lines


#: Script lines that make ``netserve.serve()`` in the script get SIGTERM right after it logs
#: its serving line, the earliest a signal can find its handlers installed.
SIGTERM_ON_SERVING = """
import logging, os, signal, sys
import netserve

class SignalOnServing(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("serving "):
            os.kill(os.getpid(), signal.SIGTERM)

logging.getLogger("netserve").addHandler(SignalOnServing())
logging.getLogger("netserve").setLevel(logging.INFO)
"""


def run_script(path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Write ``SIGTERM_ON_SERVING`` then *body* (dedented) to *path*, and run it to the end."""
    path.write_text(SIGTERM_ON_SERVING + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=JOIN_TIMEOUT * 4,
        stdin=subprocess.DEVNULL,
    )


def test_a_signal_right_after_the_serving_line_is_handled(tmp_path: Path) -> None:
    result = run_script(
        tmp_path / "early_signal.py",
        """
        from netserve.demo import SeedHandler
        sys.exit(netserve.serve(SeedHandler, "127.0.0.1:0"))
        """,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_event_loop_handler_leaves_the_signal_handlers_as_it_found_them(
    tmp_path: Path, loop: str
) -> None:
    # the loop's own handlers outlive it: asyncio's close sets SIG_DFL (a nohup'd SIG_IGN
    # HUP would then end the process), uvloop's leaves its handler, which swallows them
    result = run_script(
        tmp_path / "restores_signals.py",
        f"""
        from netserve.demo import ReverseLineHandler

        def own_handler(signum, frame):
            pass

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGQUIT, signal.SIGTTIN, signal.SIGTERM):
            signal.signal(signum, own_handler)
        names = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU")
        before = {{name: signal.getsignal(getattr(signal, name)) for name in names}}
        code = netserve.serve(ReverseLineHandler, "127.0.0.1:0", loop={loop!r})
        after = {{name: signal.getsignal(getattr(signal, name)) for name in names}}
        changed = [name for name in names if after[name] != before[name]]
        print("changed:", changed, after)
        sys.exit(code)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("changed: [] "), result.stdout


def test_run_raises_for_a_bad_handler_before_binding(recorded_sockets: list[socket.socket]) -> None:
    with pytest.raises(HandlerImportError, match="Nope"):
        _runner.run(Config(handler="netserve.demo:Nope", bind=("127.0.0.1:0",)))
    assert recorded_sockets == []


def test_run_raises_bind_error(listening_blocker: int) -> None:
    with pytest.raises(BindError, match=f"127.0.0.1:{listening_blocker}"):
        _runner.run(Config(bind=(f"127.0.0.1:{listening_blocker}",)), install_signal_handlers=False)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"threads": -1}, "threads"), ({"max_connections": 0}, "max_connections")],
)
def test_serve_raises_config_error_for_a_bad_option(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        netserve.serve(SeedHandler, ("127.0.0.1", 0), install_signal_handlers=False, **options)


def test_workers_without_signal_handlers_or_off_the_main_thread_is_a_config_error(
    recorded_sockets: list[socket.socket],
) -> None:
    with pytest.raises(ConfigError, match=r"^workers: .*install_signal_handlers=True"):
        netserve.serve(SeedHandler, "127.0.0.1:0", workers=2, install_signal_handlers=False)
    errors: list[BaseException] = []

    def serve_in_a_thread() -> None:
        try:
            netserve.serve(SeedHandler, "127.0.0.1:0", workers=2)
        except ConfigError as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve_in_a_thread)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    assert [str(e).split(":")[0] for e in errors] == ["workers"]
    assert recorded_sockets == []  # refused before binding


def test_options_that_do_not_apply_are_named_in_a_warning(
    start_script: Callable[..., ServerProcess],
) -> None:
    server = start_script("127.0.0.1:0", max_requests=100, transport="loop")
    server.tcp_address()
    assert "WARNING ignored without workers: max_requests" in server.lines, server.lines
    assert "WARNING ignored with a thread handler: transport" in server.lines, server.lines
    code, _ = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr


def test_serve_rejects_an_unknown_option() -> None:
    with pytest.raises((TypeError, ConfigError), match="no_such_option"):
        netserve.serve(SeedHandler, "127.0.0.1:0", no_such_option=1)


def test_serve_rejects_a_stream_handler_for_udp() -> None:
    with pytest.raises(ConfigError, match=r"^udp: "):
        netserve.serve(ReverseHandler, "127.0.0.1:0", udp=True, install_signal_handlers=False)


def test_a_second_fast_stop_cuts_a_graceful_drain_short() -> None:
    started = Started()
    config = Config(bind=("127.0.0.1:0",), threads=2, drain_timeout=JOIN_TIMEOUT * 10)
    servers = build_servers(config, started.handler())
    address = servers[0].server_address
    group = ServerGroup(servers)
    thread = _serving(group)
    with connect(address) as client:
        client.sendall(b"half a line")
        started.wait()
        group.stop(graceful=True)
        thread.join(DRAIN_CHECK)
        assert thread.is_alive(), "draining: the request is in flight"
        began = time.monotonic()
        group.stop(graceful=False)  # as a Ctrl-C after SIGTERM
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "the fast stop did not cut the drain short"
        assert time.monotonic() - began < JOIN_TIMEOUT


def test_a_serve_loop_that_dies_stops_the_group_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config(bind=("127.0.0.1:0",), threads=2)
    servers = build_servers(config, Started().handler())

    def broken_verify(request: Any, client_address: Any) -> bool:
        raise RuntimeError("verify_request is broken")

    servers[0].verify_request = broken_verify  # type: ignore[method-assign]
    group = ServerGroup(servers)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(group.serve()), daemon=True)
    thread.start()
    with contextlib.suppress(OSError), connect(servers[0].server_address):
        pass
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "the group kept running with a dead serve loop"
    assert result == [False]
    assert "serve loop" in caplog.text
    assert "verify_request is broken" in caplog.text
