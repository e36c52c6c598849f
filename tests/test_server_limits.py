"""The server core's production features: bounded pools, connection limits, idle timeout and
graceful drain, over real loopback sockets."""

from __future__ import annotations

import gc
import logging
import math
import resource
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import netserve
import netserve._server as netserve_server
from netserve.testing import run_server
from tests.netio import needs_proc_fd, open_fd_count

WAIT = 10.0


class LineReverse(netserve.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.rstrip(b"\n")[::-1] + b"\n")


def connect(address: Any, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    if source:
        sock.bind((source, 0))
    sock.connect(address)
    return sock


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed its side (EOF or reset) within WAIT."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def wait_until(predicate: Any, timeout: float = WAIT) -> bool:
    """Poll *predicate* (bounded by *timeout*) for conditions with no event to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# --- bounded thread pool ----------------------------------------------------------------------


def test_pool_server_serves_with_a_fixed_number_of_threads() -> None:
    before = threading.active_count()

    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 4

    server = Server(("127.0.0.1", 0), LineReverse)
    with run_server(server) as address:
        for n in range(50):
            with connect(address) as sock:
                line = b"abc%d" % n
                assert ask(sock, line) == line[::-1] + b"\n"
        assert threading.active_count() <= before + 4 + 1  # pool + serving thread
    assert threading.active_count() <= before + 1


def test_2000_held_connections_on_16_threads(clients: list[socket.socket]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the 4200 this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4200), hard))
    before = threading.active_count()

    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 16
        max_queued = 16
        overflow = "wait"
        request_queue_size = 4096
        drain_timeout = 1.0

    server = Server(("127.0.0.1", 0), LineReverse)
    try:
        with run_server(server) as address:
            for _ in range(2000):
                clients.append(connect(address))
            # the first ones are being served: a held client is answered
            assert ask(clients[0], b"held") == b"dleh\n"
            assert threading.active_count() <= before + 16 + 1
            for sock in clients:
                sock.close()
            clients.clear()
            with connect(address) as late:
                assert ask(late, b"late") == b"etal\n"
            assert threading.active_count() <= before + 16 + 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pool_rejects_with_busy_message_when_full(
    clients: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 1
        max_queued = 1
        busy_message = b"busy, try later\n"
        drain_timeout = 1.0

    server = Server(("127.0.0.1", 0), LineReverse)
    with run_server(server) as address:
        clients.append(connect(address))
        assert ask(clients[0], b"one") == b"eno\n"  # now holds the only worker
        clients.append(connect(address))  # queued
        assert wait_until(lambda: server._concurrency.in_flight == 2)  # type: ignore[union-attr]
        refused = connect(address)
        assert refused.recv(100) == b"busy, try later\n"
        assert closed_by_server(refused)
        refused.close()
        assert server.refused["busy"] == 1
    assert "refused connection from 127.0.0.1" in caplog.text


def test_concurrency_keyword_takes_a_pool() -> None:
    pool = netserve.ThreadPool(max_workers=2, max_queued=0)
    server = netserve.TCPServer(("127.0.0.1", 0), LineReverse, concurrency=pool)
    with run_server(server) as address, connect(address) as a, connect(address) as b:
        assert ask(a, b"ab") == b"ba\n"
        assert ask(b, b"cd") == b"dc\n"
        names = {t.name for t in threading.enumerate()}
        assert {"netserve-pool-0", "netserve-pool-1"} <= names


# --- connection limits ----------------------------------------------------------------------


def test_max_connections_refuses_the_extra_connection(
    clients: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), LineReverse, max_connections=2)
    server.daemon_threads = True
    with run_server(server) as address:
        for n in range(2):
            clients.append(connect(address))
            assert ask(clients[-1], b"x%d" % n) == b"%dx\n" % n
        extra = [connect(address) for _ in range(5)]
        for sock in extra:
            assert closed_by_server(sock)
            sock.close()
        assert server.refused["max_connections"] == 5
        clients.pop().close()
        assert wait_until(lambda: len(server._connections) == 1)
        with connect(address) as again:
            assert ask(again, b"ok") == b"ko\n"
    refusals = [r for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(refusals) == 1  # logged at most once a second per reason


def test_max_connections_per_ip(clients: list[socket.socket]) -> None:
    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), LineReverse, max_connections_per_ip=1)
    server.daemon_threads = True
    with run_server(server) as address:
        clients.append(connect(address, source="127.0.0.1"))
        assert ask(clients[0], b"a") == b"a\n"
        second = connect(address, source="127.0.0.1")
        assert closed_by_server(second)
        second.close()
        assert server.refused["max_connections_per_ip"] == 1
        other_ip = connect(address, source="127.0.0.2")
        clients.append(other_ip)
        assert ask(other_ip, b"b2") == b"2b\n"


def test_limits_set_on_a_running_server_take_effect(clients: list[socket.socket]) -> None:
    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), LineReverse)
    with run_server(server) as address:
        clients.append(connect(address))
        assert ask(clients[0], b"a") == b"a\n"
        server.max_connections = 1
        extra = connect(address)
        assert closed_by_server(extra)
        extra.close()
        assert server.refused["max_connections"] == 1
        server.max_connections = None
        server.max_connections_per_ip = 1
        extra = connect(address)
        assert closed_by_server(extra)
        extra.close()
        assert server.refused["max_connections_per_ip"] == 1
        clients.pop().close()  # so that the drain at the end has nothing to wait for


def test_a_worker_at_max_connections_tells_its_share_until_the_limit_is_lifted(
    clients: list[socket.socket],
) -> None:
    from tests.strategies.test_pool import FakeShare

    share = FakeShare()
    pool = netserve.ThreadPool(max_workers=4, max_queued=0, share=share)
    server = netserve.TCPServer(
        ("127.0.0.1", 0), LineReverse, concurrency=pool, max_connections=1, drain_timeout=1.0
    )
    with run_server(server) as address:
        clients.append(connect(address))
        assert ask(clients[0], b"a") == b"a\n"
        assert share.rooms == [False]  # at the limit: the next is another worker's
        server.max_connections = None
        clients.append(connect(address))  # the next admission reads the lifted limit
        assert ask(clients[1], b"b") == b"b\n"
        assert share.rooms == [False, True]
        for sock in clients:
            sock.close()
        clients.clear()


def test_limits_and_verify_request_must_both_accept(clients: list[socket.socket]) -> None:
    asked: list[Any] = []

    class Server(netserve.ThreadingTCPServer):
        daemon_threads = True

        def verify_request(self, request: Any, client_address: Any) -> bool:
            asked.append(client_address)
            return len(asked) != 2  # refuses the second one it is asked about

    server = Server(("127.0.0.1", 0), LineReverse, max_connections=2)
    with run_server(server) as address:
        clients.append(connect(address))
        assert ask(clients[0], b"1") == b"1\n"
        refused_by_user = connect(address)
        assert closed_by_server(refused_by_user)
        refused_by_user.close()
        clients.append(connect(address))
        assert ask(clients[1], b"3") == b"3\n"
        refused_by_limit = connect(address)
        assert closed_by_server(refused_by_limit)
        refused_by_limit.close()
    assert len(asked) == 3  # the connection over the limit never reached verify_request


# --- idle timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("idle_timeout", 0),  # would make every connection non-blocking: dropped unread
        ("idle_timeout", 1e10),  # settimeout() overflows: serve_forever() would raise
        ("drain_timeout", 1e10),  # the drain's wait overflows
        ("drain_timeout", -1),
    ],
)
def test_timeouts_that_cannot_work_are_refused_up_front(name: str, value: float) -> None:
    with pytest.raises(netserve.ConfigError, match=f"^{name}: "):
        netserve.TCPServer(("127.0.0.1", 0), LineReverse, **{name: value})


def test_the_longest_timeouts_accepted_work() -> None:
    server = netserve.TCPServer(("127.0.0.1", 0), LineReverse, idle_timeout=1e7, drain_timeout=0)
    with run_server(server) as address, connect(address) as client:
        assert ask(client, b"abc") == b"cba\n"


def test_idle_client_is_disconnected_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    errors: list[Any] = []

    class Server(netserve.ThreadingTCPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(client_address)

    server = Server(("127.0.0.1", 0), LineReverse, idle_timeout=0.8)
    with run_server(server) as address, connect(address) as idle, connect(address) as busy:
        for n in range(8):  # busy talks every 0.1 s: never idle for 0.8 s (a wide margin)
            assert ask(busy, b"n%d" % n) == b"%dn\n" % n
            if n == 3:  # about 0.4 s in: the idle one is still open
                idle.setblocking(False)
                with pytest.raises(BlockingIOError):
                    idle.recv(1)
                idle.setblocking(True)
            time.sleep(0.1)
        assert closed_by_server(idle)
        assert ask(busy, b"still") == b"llits\n"
    assert errors == []
    assert "idle for 0.8 s" in caplog.text


def test_idle_timeout_never_cuts_off_a_client_reading_a_long_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    size = 4 << 20

    class Download(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            self.wfile.write(b"x" * size)  # one sendall: longer than idle_timeout in all

    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), Download, idle_timeout=0.3)
    with run_server(server) as address:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.settimeout(WAIT)
        with client:
            client.connect(address)
            client.sendall(b"go\n")
            began = time.monotonic()
            received = 0
            while received < size:
                chunk = client.recv(1 << 16)
                assert chunk, f"cut off after {received} bytes"
                received += len(chunk)
                time.sleep(0.01)  # a slow reader, but one that never stops reading
            assert time.monotonic() - began > 0.3  # the reply took longer than idle_timeout
    assert "idle for" not in caplog.text


@pytest.mark.parametrize("where", ["backend", "handler timeout"])
def test_other_timeouts_are_errors_not_idle_clients(
    caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    errors: list[BaseException | None] = []

    class TimesOut(netserve.StreamRequestHandler):
        timeout = 0.2 if where == "handler timeout" else None  # stdlib meaning: an error

        def handle(self) -> None:
            if where == "backend":
                self.rfile.readline()
                raise TimeoutError("the backend did not answer")
            self.rfile.readline()  # the client sends nothing

    class Server(netserve.ThreadPoolTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(sys.exc_info()[1])

    server = Server(("127.0.0.1", 0), TimesOut, idle_timeout=5.0)
    with run_server(server) as address, connect(address) as client:
        if where == "backend":
            client.sendall(b"go\n")
        assert closed_by_server(client)
    assert len(errors) == 1
    assert type(errors[0]) is TimeoutError
    assert "idle for" not in caplog.text


# --- graceful drain -------------------------------------------------------------------------


class HalfLine(netserve.StreamRequestHandler):
    """Replies once a whole line has arrived; tells the test when the request began."""

    began = threading.Event()

    def handle(self) -> None:
        first = self.rfile.read(4)
        HalfLine.began.set()
        rest = self.rfile.readline()
        self.wfile.write((first + rest)[::-1])


def test_shutdown_with_drain_lets_the_request_in_flight_finish() -> None:
    HalfLine.began.clear()
    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), HalfLine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(server.server_address) as client:
            client.sendall(b"abcd")
            assert HalfLine.began.wait(WAIT)
            stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": WAIT})
            stopper.start()
            thread.join(WAIT)
            assert not thread.is_alive()  # stopped accepting at once
            assert stopper.is_alive()  # still draining: the request is in flight
            client.sendall(b"ef\n")
            assert client.recv(100) == b"\nfedcba"
            stopper.join(WAIT)
            assert not stopper.is_alive()
    finally:
        server.server_close()


def test_drain_timeout_closes_what_remains_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    HalfLine.began.clear()
    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), HalfLine, drain_timeout=0.2)
    client = connect(server.server_address)
    try:
        with run_server(server):
            client.sendall(b"abcd")
            assert HalfLine.began.wait(WAIT)
            closer_started = time.monotonic()
        # leaving run_server called server_close(): 0.2 s of drain, then the connection was shut
        assert 0.2 <= time.monotonic() - closer_started < WAIT
        assert closed_by_server(client)
    finally:
        client.close()
    assert "closing connection from 127.0.0.1" in caplog.text


def test_drain_timeout_ends_a_request_served_inline_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    HalfLine.began.clear()
    server = netserve.TCPServer(("127.0.0.1", 0), HalfLine)  # no strategy: serves inline
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = connect(server.server_address)
    try:
        client.sendall(b"abcd")
        assert HalfLine.began.wait(WAIT)
        stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": 0.2})
        stopper.start()
        stopper.join(WAIT)
        assert not stopper.is_alive()  # it did not wait for the silent client
        assert not thread.is_alive()
        assert closed_by_server(client)
    finally:
        client.close()
        server.server_close()
    assert "closing connection from 127.0.0.1" in caplog.text


@pytest.mark.parametrize(
    "server_class", [netserve.TCPServer, netserve.ThreadPoolTCPServer], ids=["inline", "pool"]
)
def test_shutdown_with_an_unbounded_drain_waits_for_the_request_in_flight(
    server_class: type[netserve.TCPServer],
) -> None:
    HalfLine.began.clear()
    server = server_class(("127.0.0.1", 0), HalfLine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = connect(server.server_address)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            server.shutdown(drain_timeout=math.inf)  # no limit: wait as long as it takes
        except BaseException as exc:
            errors.append(exc)

    try:
        client.sendall(b"abcd")
        assert HalfLine.began.wait(WAIT)
        stopper = threading.Thread(target=stop)
        stopper.start()
        client.sendall(b"ef\n")  # the request can finish: the drain ends with it
        assert recv_all(client) == b"\nfedcba"
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert errors == []  # before: OverflowError from the wait for the loop
        thread.join(WAIT)
        assert not thread.is_alive()
    finally:
        client.close()
        server.server_close()


def recv_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes (within WAIT)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_graceful_shutdown_refuses_the_backlog_with_a_word(
    clients: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 1
        max_queued = 0
        overflow = "wait"
        busy_message = b"stopping\n"

    server = Server(("127.0.0.1", 0), LineReverse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clients.append(connect(server.server_address))
        assert ask(clients[0], b"served") == b"devres\n"  # holds the only worker
        waiting = [connect(server.server_address) for _ in range(3)]  # stay in the backlog
        clients.extend(waiting)
        stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": WAIT})
        stopper.start()
        for sock in waiting:
            assert sock.recv(100) == b"stopping\n"
            assert closed_by_server(sock)
        assert server.refused["stopping"] == 3
        assert ask(clients[0], b"still") == b"llits\n"  # in flight: still served
        clients[0].close()
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        server.server_close()
    assert "refused connection from 127.0.0.1" in caplog.text
    assert "stopping" in caplog.text


def test_graceful_shutdown_refuses_clients_that_come_during_the_drain(
    clients: list[socket.socket],
) -> None:
    class Server(netserve.ThreadPoolTCPServer):
        busy_message = b"stopping\n"

    HalfLine.began.clear()
    server = Server(("127.0.0.1", 0), HalfLine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": WAIT})
    try:
        clients.append(connect(server.server_address))
        clients[0].sendall(b"abcd")  # a request in flight: the drain waits for it
        assert HalfLine.began.wait(WAIT)
        stopper.start()
        thread.join(WAIT)  # serve_forever() has returned: the drain is under way
        for _ in range(3):
            with connect(server.server_address) as late:
                assert late.recv(100) == b"stopping\n"
                assert closed_by_server(late)
        assert server.refused["stopping"] == 3
        clients[0].sendall(b"ef\n")
        assert clients[0].recv(100) == b"\nfedcba"  # the one in flight is still served
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        server.server_close()
    assert not [t for t in threading.enumerate() if t.name == "refuse while stopping"]


def test_shutdown_with_drain_from_a_handler_does_not_wait_for_itself() -> None:
    returned: list[float] = []

    class Quit(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            began = time.monotonic()
            self.server.shutdown(drain_timeout=WAIT)
            returned.append(time.monotonic() - began)
            self.wfile.write(b"bye\n")

    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), Quit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(server.server_address) as client:
            client.sendall(b"quit\n")
            assert client.recv(100) == b"bye\n"
            assert closed_by_server(client)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert returned[0] < WAIT / 2
        drains = [t for t in threading.enumerate() if t.name == "netserve drain"]
        for drain in drains:
            drain.join(WAIT)  # it ends once the handler that asked is done
            assert not drain.is_alive()
    finally:
        server.server_close()


def test_refusing_during_the_drain_never_waits_on_a_silent_client(
    clients: list[socket.socket],
) -> None:
    class Server(netserve.ThreadPoolTCPServer):
        def get_request(self) -> Any:
            request, address = super().get_request()
            request.settimeout(WAIT * 4)
            request.recv(1)  # a handshake of sorts (TLS, PROXY): waits for the client
            return request, address

    HalfLine.began.clear()
    server = Server(("127.0.0.1", 0), HalfLine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clients.append(connect(server.server_address))
        clients[0].sendall(b"+abcd")  # through the "handshake", then a request in flight
        assert HalfLine.began.wait(WAIT)
        stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": 0.5})
        stopper.start()
        thread.join(WAIT)
        clients.append(connect(server.server_address))  # silent: never "shakes hands"
        stopper.join(WAIT)
        assert not stopper.is_alive()  # the drain ended at its timeout all the same
        assert closed_by_server(clients[1])  # and the silent client was refused
    finally:
        server.server_close()


def test_refusing_backs_off_after_an_accept_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def failing_refuse(self: Any) -> bool:
        calls.append(time.monotonic())
        return False  # as when accept() fails with EMFILE: the listener stays readable

    monkeypatch.setattr(netserve.TCPServer, "_refuse_pending", failing_refuse)
    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), LineReverse)
    try:
        # the listener is readable throughout; the sleep stands for the drain
        with connect(server.server_address), server._refusing_new_connections():
            time.sleep(0.35)
    finally:
        server.server_close()
    assert 2 <= len(calls) <= 6, len(calls)  # one try per ACCEPT_BACKOFF (0.1 s), no spin


@needs_proc_fd
def test_a_refuser_that_outlives_the_drain_closes_its_descriptors_as_it_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    refusing = threading.Event()

    class Server(netserve.ThreadPoolTCPServer):
        def shutdown_request(self, request: Any) -> None:
            refusing.set()
            release.wait(WAIT)  # an override that blocks: the refuser outlives the drain
            super().shutdown_request(request)

    monkeypatch.setattr(netserve_server, "FORCED_CLOSE_GRACE", 0.05)
    server = Server(("127.0.0.1", 0), LineReverse)
    try:
        before = open_fd_count()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with connect(server.server_address) as client:
                with server._refusing_new_connections():
                    assert refusing.wait(WAIT)
                assert "did not end; leaving it" in caplog.text
                release.set()
                [refuser] = [t for t in threading.enumerate() if t.name == "refuse while stopping"]
                refuser.join(WAIT)
                assert closed_by_server(client)
            del refuser
            gc.collect()
        assert open_fd_count() == before
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # closed,
        # not left to the garbage collector
    finally:
        release.set()
        server.server_close()


def test_a_refuser_that_fails_leaves_the_drain_and_its_descriptors_in_order(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def out_of_descriptors() -> None:
        raise OSError(24, "Too many open files")

    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), LineReverse)
    try:
        monkeypatch.setattr(netserve_server.selectors, "DefaultSelector", out_of_descriptors)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with server._refusing_new_connections():
                pass  # the drain; the refuser has failed meanwhile, or fails now
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        monkeypatch.undo()
        server.server_close()
    assert "cannot refuse the connections made while stopping" in caplog.text


def test_a_drain_from_a_handler_waits_for_daemon_threads_in_flight() -> None:
    release = threading.Event()
    slow_started = threading.Event()

    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            if line == b"slow\n":
                slow_started.set()
                release.wait(WAIT)
                self.wfile.write(b"slow done\n")
            else:
                self.server.shutdown(drain_timeout=WAIT)
                self.wfile.write(b"bye\n")

    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(server.server_address) as slow, connect(server.server_address) as quit:
            slow.sendall(b"slow\n")
            assert slow_started.wait(WAIT)
            quit.sendall(b"quit\n")
            assert quit.recv(100) == b"bye\n"
            thread.join(WAIT)
            [drain] = [t for t in threading.enumerate() if t.name == "netserve drain"]
            drain.join(0.3)
            assert drain.is_alive()  # it waits for the daemon thread in flight
            release.set()
            assert slow.recv(100) == b"slow done\n"
            drain.join(WAIT)
            assert not drain.is_alive()
    finally:
        server.server_close()


def test_close_request_override_without_super_does_not_fill_the_limit() -> None:
    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 2

        def close_request(self, request: Any) -> None:
            request.close()  # stdlib-correct, but skips the base class

    # the limit is above what can still be closing at once (two workers, a client at a
    # time), and far below the number of connections: without pruning, the 9th is refused
    server = Server(("127.0.0.1", 0), LineReverse, max_connections=8)
    with run_server(server) as address:
        for n in range(30):
            with connect(address) as sock:
                line = b"x%d" % n
                assert ask(sock, line) == line[::-1] + b"\n"
    assert server.refused["max_connections"] == 0


def test_graceful_shutdown_restores_the_listener_blocking_mode() -> None:
    server = netserve.ThreadPoolTCPServer(("127.0.0.1", 0), LineReverse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        server.shutdown(drain_timeout=1.0)
        thread.join(WAIT)
        assert server.socket.gettimeout() is None  # handle_request() still blocks, as before
    finally:
        server.server_close()
