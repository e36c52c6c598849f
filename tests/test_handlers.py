"""Request handlers: BaseRequestHandler, StreamRequestHandler, DatagramRequestHandler and the
unbuffered ``_SocketWriter`` behind ``wfile``, on real loopback and Unix sockets."""

from __future__ import annotations

import array
import errno
import io
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import netserve
from netserve._handlers import _SocketWriter
from netserve.testing import run_server
from tests.netio import HOST, WAIT, recv_line, recv_until_eof


@pytest.fixture
def make_server(make_server: Callable[..., Any]) -> Callable[..., Any]:
    """The shared ``make_server`` (conftest.py), called here with the handler first."""

    def make(handler: Any, cls: type[Any] = netserve.TCPServer, address: Any = (HOST, 0)) -> Any:
        return make_server(cls, handler, address)

    return make


class ErrorRecordingServer(netserve.TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.errors: list[BaseException | None] = []
        super().__init__(*args, **kwargs)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors.append(sys.exc_info()[1])


# --- BaseRequestHandler ---------------------------------------------------------------------


class _Untouchable:
    """A request or server that fails the test if anything is looked up on it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the default handler methods touched .{name}")


def test_base_handler_stores_attributes_and_defaults_do_nothing() -> None:
    request, address, server = _Untouchable(), ("192.0.2.7", 4321), _Untouchable()
    handler = netserve.BaseRequestHandler(request, address, server)  # type: ignore[arg-type]
    assert handler.request is request
    assert handler.client_address == address
    assert handler.server is server
    handler.setup()
    handler.handle()
    handler.finish()
    assert vars(handler) == {"request": request, "client_address": address, "server": server}


def test_setup_handle_finish_run_in_order_with_request_attributes(make_server: Any) -> None:
    events: list[str] = []
    seen: dict[str, Any] = {}

    class Handler(netserve.BaseRequestHandler):
        def setup(self) -> None:
            events.append("setup")
            seen.update(
                request=self.request,
                peer=self.request.getpeername(),
                client_address=self.client_address,
                server=self.server,
            )

        def handle(self) -> None:
            events.append("handle")

        def finish(self) -> None:
            events.append("finish")

    server = make_server(Handler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
        assert events == ["setup", "handle", "finish"]
        assert isinstance(seen["request"], socket.socket)
        assert seen["peer"] == client.getsockname()
        assert seen["client_address"] == client.getsockname()
        assert seen["server"] is server


def test_finish_runs_when_handle_raises(make_server: Any) -> None:
    events: list[str] = []

    class Handler(netserve.BaseRequestHandler):
        def handle(self) -> None:
            events.append("handle")
            raise ValueError("handle failed")

        def finish(self) -> None:
            events.append("finish")

    server = make_server(Handler, ErrorRecordingServer)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
    assert events == ["handle", "finish"]
    assert len(server.errors) == 1
    assert isinstance(server.errors[0], ValueError)  # the exception reaches the server


def test_setup_failure_skips_handle_and_finish(make_server: Any) -> None:
    events: list[str] = []

    class Handler(netserve.BaseRequestHandler):
        def setup(self) -> None:
            events.append("setup")
            raise OSError(errno.EIO, "setup failed")

        def handle(self) -> None:
            events.append("handle")

        def finish(self) -> None:
            events.append("finish")

    server = make_server(Handler, ErrorRecordingServer)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        assert recv_until_eof(client) == b""
    assert events == ["setup"]
    assert isinstance(server.errors[0], OSError)


# --- StreamRequestHandler -------------------------------------------------------------------------


def test_stream_handler_files_and_connection(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            seen["connection_is_request"] = self.connection is self.request
            seen["rfile"] = self.rfile
            seen["wfile"] = self.wfile
            seen["timeout"] = self.connection.gettimeout()
            seen["line"] = self.rfile.readline()
            seen["rest"] = self.rfile.read()
            self.wfile.write(b"reply\n")

        def finish(self) -> None:
            super().finish()
            seen["closed_after_finish"] = (self.rfile.closed, self.wfile.closed)
            seen["socket_open_after_finish"] = self.connection.fileno() != -1

    server = make_server(Handler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"first line\nsecond")
        client.shutdown(socket.SHUT_WR)
        server.handle_request()
        assert recv_until_eof(client) == b"reply\n"
    assert seen["connection_is_request"]
    assert isinstance(seen["rfile"], io.BufferedReader)  # rbufsize -1: buffered
    assert isinstance(seen["wfile"], _SocketWriter)  # wbufsize 0: unbuffered
    assert isinstance(seen["wfile"], io.BufferedIOBase)
    assert seen["timeout"] is None  # timeout None leaves the socket blocking
    assert seen["line"] == b"first line\n"
    assert seen["rest"] == b"second"
    assert seen["closed_after_finish"] == (True, True)
    assert seen["socket_open_after_finish"]  # the server closes it, not finish()


def test_rbufsize_zero_gives_an_unbuffered_rfile(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    class Handler(netserve.StreamRequestHandler):
        rbufsize = 0

        def handle(self) -> None:
            seen["rfile"] = self.rfile
            seen["data"] = self.rfile.read(4)

    server = make_server(Handler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"data")
        server.handle_request()
        recv_until_eof(client)
    assert isinstance(seen["rfile"], io.RawIOBase)
    assert not isinstance(seen["rfile"], io.BufferedReader)
    assert seen["data"] == b"data"


def test_wbufsize_zero_sends_each_write_at_once_and_returns_its_length(
    make_server: Any,
) -> None:
    written: list[int] = []
    answers: list[bytes] = []
    items = array.array("i", [1, 2, 3, 4])

    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            written.append(self.wfile.write(b"now\n"))
            # the client answers only once it has read "now": no flush() was needed
            answers.append(self.rfile.readline())
            written.append(self.wfile.write(memoryview(items)))
            written.append(self.wfile.write(bytearray(b"end")))

    server = make_server(Handler)
    with run_server(server) as address, socket.create_connection(address, timeout=WAIT) as c:
        assert recv_line(c) == b"now\n"
        c.sendall(b"ack\n")
        rest = recv_until_eof(c)
    assert answers == [b"ack\n"]
    assert written == [4, items.itemsize * 4, 3]  # bytes, not items
    assert rest == items.tobytes() + b"end"


def test_wbufsize_positive_buffers_until_finish_flushes(make_server: Any) -> None:
    written = threading.Event()
    checked = threading.Event()
    seen: dict[str, Any] = {}

    class Handler(netserve.StreamRequestHandler):
        wbufsize = 65536

        def handle(self) -> None:
            seen["wfile"] = self.wfile
            seen["written"] = self.wfile.write(b"buffered\n")
            written.set()
            checked.wait(WAIT)

    server = make_server(Handler)
    with run_server(server) as address, socket.create_connection(address, timeout=WAIT) as c:
        assert written.wait(WAIT)
        c.settimeout(0.2)
        with pytest.raises(TimeoutError):
            c.recv(100)  # still in the handler's buffer
        checked.set()
        assert recv_until_eof(c) == b"buffered\n"  # flushed by finish()
    assert isinstance(seen["wfile"], io.BufferedWriter)
    assert seen["written"] == 9


def test_timeout_is_applied_and_silent_client_times_out(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    class Handler(netserve.StreamRequestHandler):
        timeout = 0.1

        def handle(self) -> None:
            seen["timeout"] = self.connection.gettimeout()
            start = time.monotonic()
            try:
                self.rfile.readline()
            except OSError as exc:
                seen["error"] = exc
            seen["waited"] = time.monotonic() - start

    server = make_server(Handler)
    with run_server(server) as address, socket.create_connection(address, timeout=WAIT) as c:
        assert recv_until_eof(c) == b""  # says nothing; the handler gives up
    assert seen["timeout"] == 0.1
    assert isinstance(seen["error"], socket.timeout)
    assert 0.09 <= seen["waited"] < WAIT


@pytest.mark.parametrize("disable", [False, True])
def test_disable_nagle_algorithm_sets_tcp_nodelay(make_server: Any, disable: bool) -> None:
    seen: list[int] = []

    class Handler(netserve.StreamRequestHandler):
        disable_nagle_algorithm = disable

        def handle(self) -> None:
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = make_server(Handler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        recv_until_eof(client)
    assert [bool(v) for v in seen] == [disable]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_large_write_interrupted_by_signals_is_not_truncated(make_server: Any) -> None:
    size = 4 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    small_buffer = 64 * 1024  # so that the write blocks until the client has read most of it
    writing = threading.Event()
    written: list[int] = []

    class Big(netserve.StreamRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, small_buffer)

        def handle(self) -> None:
            writing.set()
            written.append(self.wfile.write(payload))

    server = make_server(Big)
    handled: list[int] = []
    serving_thread = threading.get_ident()  # handle_request() runs here, in the main thread
    received = bytearray()
    client_errors: list[BaseException] = []

    def client() -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, small_buffer)
                c.settimeout(WAIT)
                c.connect(server.server_address)
                assert writing.wait(WAIT)
                # Signal the writer at these points: at each one, far more is still unsent
                # than the socket buffers hold, so it is inside sendall().
                marks = [size // 16, size // 4, size // 2, 3 * size // 4]
                deadline = time.monotonic() + WAIT
                while len(received) < size + 1 and time.monotonic() < deadline:
                    data = c.recv(65536)
                    if not data:
                        break
                    received.extend(data)
                    while marks and len(received) >= marks[0]:
                        marks.pop(0)
                        signal.pthread_kill(serving_thread, signal.SIGUSR1)
        except BaseException as exc:
            client_errors.append(exc)

    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    try:
        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        server.handle_request()
        reader.join(WAIT)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not reader.is_alive()
    assert client_errors == []
    assert handled  # the signals did reach the writing thread
    assert written == [size]
    assert len(received) == size
    assert bytes(received) == payload


def test_finish_ignores_a_socket_error_from_the_final_flush() -> None:
    class StubFile:
        def __init__(self, flush_error: BaseException | None = None) -> None:
            self.closed = False
            self.flushes = 0
            self.flush_error = flush_error

        def flush(self) -> None:
            self.flushes += 1
            if self.flush_error is not None:
                raise self.flush_error

        def close(self) -> None:
            self.closed = True

    handler = netserve.StreamRequestHandler.__new__(netserve.StreamRequestHandler)
    handler.wfile = StubFile(ConnectionAbortedError(errno.ECONNABORTED, "aborted"))  # type: ignore[assignment]
    handler.rfile = StubFile()  # type: ignore[assignment]
    handler.finish()
    assert handler.wfile.flushes == 1  # type: ignore[attr-defined]
    assert handler.wfile.closed
    assert handler.rfile.closed

    # a wfile closed already is not flushed again; other errors are not swallowed
    handler.wfile = StubFile(ValueError("not a socket error"))  # type: ignore[assignment]
    handler.wfile.closed = True  # type: ignore[misc]
    handler.finish()
    assert handler.wfile.flushes == 0  # type: ignore[attr-defined]
    handler.wfile = StubFile(ValueError("not a socket error"))  # type: ignore[assignment]
    with pytest.raises(ValueError, match="not a socket error"):
        handler.finish()


def test_stream_handler_on_unix_socket(make_server: Any, unix_dir: str) -> None:
    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline()[::-1])

    path = os.path.join(unix_dir, "h.sock")
    server = make_server(Handler, netserve.UnixStreamServer, path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(path)
        client.sendall(b"abc\n")
        server.handle_request()
        assert recv_until_eof(client) == b"\ncba"


# --- _SocketWriter ------------------------------------------------------------------------------


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(WAIT)
    b.settimeout(WAIT)
    with a, b:
        yield a, b


def test_socket_writer_file_interface(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = socket_pair
    writer = _SocketWriter(a)
    assert isinstance(writer, io.BufferedIOBase)
    assert writer.writable()
    assert not writer.readable()
    assert not writer.seekable()
    assert writer.fileno() == a.fileno()
    with pytest.raises(io.UnsupportedOperation):
        writer.read(1)


def test_socket_writer_sends_at_once_and_returns_byte_count(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socket_pair
    writer = _SocketWriter(a)
    assert writer.write(b"abc") == 3
    assert b.recv(10) == b"abc"  # no flush()
    doubles = array.array("d", [1.5, 2.5])
    assert writer.write(memoryview(doubles)) == 16
    assert writer.write(bytearray(b"xy")) == 2
    assert writer.write(b"") == 0
    writer.flush()
    expected = doubles.tobytes() + b"xy"
    got = bytearray()
    for _ in range(len(expected)):
        if len(got) == len(expected):
            break
        got += b.recv(len(expected) - len(got))
    assert bytes(got) == expected


def test_socket_writer_close_leaves_the_socket_open(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socket_pair
    writer = _SocketWriter(a)
    writer.close()
    assert writer.closed
    assert a.fileno() != -1
    a.sendall(b"still open")
    assert b.recv(100) == b"still open"


def test_socket_writer_large_write_is_complete(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socket_pair
    size = 4 * 1024 * 1024
    payload = os.urandom(1024) * (size // 1024)
    received = bytearray()

    def read() -> None:
        deadline = time.monotonic() + WAIT
        while len(received) < size and time.monotonic() < deadline:
            data = b.recv(1 << 16)
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert _SocketWriter(a).write(payload) == size
    reader.join(WAIT)
    assert bytes(received) == payload


# --- DatagramRequestHandler -----------------------------------------------------------------------


def test_datagram_handler_packet_socket_files_and_reply(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    class Handler(netserve.DatagramRequestHandler):
        def handle(self) -> None:
            seen["packet"] = self.packet
            seen["socket"] = self.socket
            seen["request"] = self.request
            seen["client_address"] = self.client_address
            seen["read"] = self.rfile.read()
            self.wfile.write(b"part one, ")
            self.wfile.write(b"part two")

    server = make_server(Handler, netserve.UDPServer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.bind((HOST, 0))
        client.sendto(b"the packet", server.server_address)
        server.handle_request()
        reply, sender = client.recvfrom(65536)
        client_address = client.getsockname()
    assert seen["packet"] == b"the packet"
    assert seen["socket"] is server.socket
    assert seen["request"] == (b"the packet", server.socket)
    assert seen["client_address"] == client_address
    assert seen["read"] == b"the packet"
    assert reply == b"part one, part two"  # one datagram holding everything written
    assert sender == server.server_address


def test_datagram_handler_sends_an_empty_reply_when_nothing_is_written(
    make_server: Any,
) -> None:
    server = make_server(netserve.DatagramRequestHandler, netserve.UDPServer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(b"anything", server.server_address)
        server.handle_request()
        assert client.recv(100) == b""


def test_datagram_handler_on_unix_socket(make_server: Any, unix_dir: str) -> None:
    class Handler(netserve.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read()[::-1])

    path = os.path.join(unix_dir, "d.sock")
    client_path = os.path.join(unix_dir, "c.sock")
    server = make_server(Handler, netserve.UnixDatagramServer, path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.bind(client_path)
        client.sendto(b"abc", path)
        server.handle_request()
        reply, sender = client.recvfrom(100)
    assert reply == b"cba"
    assert sender == path


def test_socket_writer_takes_its_argument_by_keyword_as_the_stdlib_does() -> None:
    from netserve._handlers import _SocketWriter

    left, right = socket.socketpair()
    with left, right:
        assert _SocketWriter(left).write(b=b"kw") == 2
        assert right.recv(10) == b"kw"
