"""The stdlib mixins and one-line classes: ThreadingMixIn, ForkingMixIn, Threading*, Forking*.

Beyond the standard library: finished threads are not kept, ``server_close()`` joins the
threads still serving, and a forking server reaps only its own children.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import socket
import socketserver
import threading
import time
import weakref
from typing import Any

import pytest

import netserve
from netserve.testing import run_server
from tests.netio import (
    HOST,
    WAIT,
    UpperDatagramHandler,
    needs_fork,
    needs_proc_fd,
    open_fd_count,
    recv_line,
    recv_until_eof,
    request,
    start_serving,
    wait_for,
)

# --- helpers ------------------------------------------------------------------------------


def wait_exited(pid: int) -> os.waitid_result:
    """Block until child *pid* has exited, without reaping it (it stays a zombie)."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert result is not None
    return result


class PidHandler(netserve.StreamRequestHandler):
    """Answers with the PID and thread of the process serving the request."""

    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"%d %d\n" % (os.getpid(), threading.get_ident()))


# --- every Threading*/Forking* class serves ---------------------------------------------------

STREAM_CLASSES = ["ThreadingTCPServer", "ThreadingUnixStreamServer"]
DATAGRAM_CLASSES = ["ThreadingUDPServer", "ThreadingUnixDatagramServer"]
FORKING_STREAM = ["ForkingTCPServer", "ForkingUnixStreamServer"]
FORKING_DATAGRAM = ["ForkingUDPServer", "ForkingUnixDatagramServer"]


def _address_for(cls: type[Any], unix_dir: str) -> Any:
    if cls.address_family == socket.AF_UNIX:
        return os.path.join(unix_dir, "srv.sock")
    return (HOST, 0)


@pytest.mark.parametrize(
    "name",
    STREAM_CLASSES + [pytest.param(n, marks=needs_fork) for n in FORKING_STREAM],
)
def test_stream_classes_serve_requests(make_server: Any, unix_dir: str, name: str) -> None:
    cls = getattr(netserve, name)
    server = make_server(cls, address=_address_for(cls, unix_dir))
    with run_server(server, poll_interval=0.01) as address:
        for i in range(3):
            assert request(address, b"n%d\n" % i, cls.address_family) == b"N%d\n" % i


@pytest.mark.parametrize(
    "name",
    DATAGRAM_CLASSES + [pytest.param(n, marks=needs_fork) for n in FORKING_DATAGRAM],
)
def test_datagram_classes_serve_requests(make_server: Any, unix_dir: str, name: str) -> None:
    cls = getattr(netserve, name)
    server = make_server(cls, UpperDatagramHandler, _address_for(cls, unix_dir))
    with (
        run_server(server, poll_interval=0.01) as address,
        socket.socket(cls.address_family, socket.SOCK_DGRAM) as client,
    ):
        if cls.address_family == socket.AF_UNIX:
            client.bind(os.path.join(unix_dir, "client.sock"))
        client.settimeout(WAIT)
        for i in range(3):
            client.sendto(b"d%d" % i, address)
            assert client.recv(100) == b"D%d" % i


def test_mixins_combine_with_user_chosen_servers(make_server: Any) -> None:
    class ThreadedUDP(netserve.ThreadingMixIn, netserve.UDPServer):
        pass

    server = make_server(ThreadedUDP, UpperDatagramHandler)
    with (
        run_server(server) as address,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(WAIT)
        client.sendto(b"mixed", address)
        assert client.recv(100) == b"MIXED"


# --- ThreadingMixIn ----------------------------------------------------------------------------


@pytest.mark.parametrize("daemon", [False, True])
def test_each_request_runs_in_a_new_thread(make_server: Any, daemon: bool) -> None:
    seen: list[tuple[int, bool]] = []

    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            thread = threading.current_thread()
            seen.append((thread.ident or 0, thread.daemon))

    class Server(netserve.ThreadingTCPServer):
        daemon_threads = daemon

    server = make_server(Server, Handler)
    serving = start_serving(server, poll_interval=0.01)
    try:
        for _ in range(2):
            assert request(server.server_address) == b""
    finally:
        server.shutdown()
        serving.join(WAIT)
    assert len(seen) == 2
    assert all(ident not in (serving.ident, threading.get_ident()) for ident, _ in seen)
    assert [d for _, d in seen] == [daemon, daemon]


def test_daemon_threads_is_read_for_each_new_thread(make_server: Any) -> None:
    seen: list[bool] = []

    class Handler(netserve.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(threading.current_thread().daemon)

    server = make_server(netserve.ThreadingTCPServer, Handler)
    with run_server(server) as address:
        assert request(address) == b""
        server.daemon_threads = True
        assert request(address) == b""
    assert seen == [False, True]


def test_process_request_thread_override_is_used(make_server: Any) -> None:
    calls: list[Any] = []

    class Server(netserve.ThreadingTCPServer):
        def process_request_thread(self, request: Any, client_address: Any) -> None:
            calls.append((threading.get_ident(), client_address))
            super().process_request_thread(request, client_address)

    server = make_server(Server)
    with run_server(server) as address:
        assert request(address) == b"PING\n"
    assert len(calls) == 1
    assert calls[0][0] != threading.get_ident()


def test_handler_error_in_thread_is_logged_and_request_closed(
    make_server: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")

    class Boom(netserve.BaseRequestHandler):
        def handle(self) -> None:
            raise ValueError("threaded boom")

    server = make_server(netserve.ThreadingTCPServer, Boom)
    with run_server(server) as address, socket.create_connection(address, timeout=WAIT) as c:
        client_host, client_port = c.getsockname()
        assert recv_until_eof(c) == b""  # shut down after the error
        for thread in server._threads:
            thread.join(WAIT)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name.startswith("netserve")
    assert f"{client_host}:{client_port}" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is ValueError
    assert capsys.readouterr() == ("", "")


def test_shutdown_from_a_threaded_handler(make_server: Any) -> None:
    class Stopping(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.server.shutdown()
            self.wfile.write(b"stopped\n")

    server = make_server(netserve.ThreadingTCPServer, Stopping)
    serving = start_serving(server, poll_interval=5)
    assert request(server.server_address) == b"stopped\n"
    serving.join(WAIT)
    assert not serving.is_alive()


def test_finished_threads_are_not_kept_after_500_requests(make_server: Any) -> None:
    server = make_server(netserve.ThreadingTCPServer)
    with run_server(server) as address:
        assert request(address) == b"PING\n"
        for thread in server._threads:
            thread.join(WAIT)
        before = threading.active_count()
        most_live = 0
        for _ in range(500):
            assert request(address) == b"PING\n"
            most_live = max(most_live, len(server._threads))
        for thread in server._threads:
            thread.join(WAIT)
        after = threading.active_count()
        assert len(server._threads) == 0
    # a thread that has just left the strategy's books may still be exiting
    assert after - before <= 2, (before, after)
    assert most_live <= 5


@needs_proc_fd
def test_descriptors_flat_after_500_threaded_requests(make_server: Any) -> None:
    server = make_server(netserve.ThreadingTCPServer)
    with run_server(server) as address:
        assert request(address) == b"PING\n"
        before = open_fd_count()
        for _ in range(500):
            assert request(address) == b"PING\n"
        for thread in server._threads:
            thread.join(WAIT)
        after = open_fd_count()
    assert after - before <= 2, (before, after)


def test_threaded_requests_are_not_kept_with_an_overridden_close_request(
    make_server: Any,
) -> None:
    # close_request() is a stdlib hook to override; closing the socket without super() must
    # not leave the server holding every request it served.
    refs: list[weakref.ref[Any]] = []

    class Handler(netserve.BaseRequestHandler):
        def handle(self) -> None:
            refs.append(weakref.ref(self.request))

    class Server(netserve.ThreadingTCPServer):
        def close_request(self, request: Any) -> None:
            request.close()

    server = make_server(Server, Handler)
    with run_server(server) as address:
        for _ in range(20):
            assert request(address) == b""
        for thread in server._threads:
            thread.join(WAIT)
    gc.collect()
    assert len(refs) == 20
    assert sum(ref() is not None for ref in refs) == 0


class BlockingHandler(netserve.BaseRequestHandler):
    """Signals ``started``, waits for ``release``, then sets ``finished``."""

    started: threading.Event
    release: threading.Event
    finished: threading.Event

    def handle(self) -> None:
        type(self).started.set()
        type(self).release.wait(WAIT)
        type(self).finished.set()


def blocking_handler() -> type[BlockingHandler]:
    class Handler(BlockingHandler):
        started = threading.Event()
        release = threading.Event()
        finished = threading.Event()

    return Handler


def close_in_thread(server: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run server_close() in a thread; report whether the handler had finished by its end."""
    outcome: dict[str, Any] = {}
    handler = server.RequestHandlerClass

    def close() -> None:
        server.server_close()
        outcome["handler_finished"] = handler.finished.is_set()

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    return closer, outcome


def test_server_close_with_block_on_close_joins_live_handler_threads(make_server: Any) -> None:
    handler = blocking_handler()
    server = make_server(netserve.ThreadingTCPServer, handler)
    assert server.block_on_close is True
    serving = start_serving(server, poll_interval=0.01)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        assert handler.started.wait(WAIT)
        server.shutdown()
        serving.join(WAIT)
        closer, outcome = close_in_thread(server)
        closer.join(0.2)
        assert closer.is_alive()  # server_close() waits for the handler...
        assert not handler.finished.is_set()
        handler.release.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert outcome == {"handler_finished": True}  # ...and returns only after it ended
        assert recv_until_eof(client) == b""
    assert server._threads == []


def test_server_close_without_block_on_close_does_not_wait(make_server: Any) -> None:
    handler = blocking_handler()

    class Server(netserve.ThreadingTCPServer):
        block_on_close = False

    server = make_server(Server, handler)
    serving = start_serving(server, poll_interval=0.01)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        assert handler.started.wait(WAIT)
        server.shutdown()
        serving.join(WAIT)
        threads = server._threads
        closer, outcome = close_in_thread(server)
        closer.join(WAIT)
        try:
            assert not closer.is_alive()
            assert outcome == {"handler_finished": False}
        finally:
            handler.release.set()
            for thread in threads:
                thread.join(WAIT)
        assert recv_until_eof(client) == b""


def test_shutdown_with_drain_timeout_waits_for_daemon_threads_too(make_server: Any) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Slow(netserve.BaseRequestHandler):
        def handle(self) -> None:
            entered.set()
            release.wait(WAIT)
            self.request.sendall(b"done\n")

    server = make_server(netserve.ThreadingTCPServer, Slow)
    server.daemon_threads = True
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        assert entered.wait(WAIT)
        stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": WAIT})
        stopper.start()
        stopper.join(0.3)
        assert stopper.is_alive()  # still draining: the request is in flight
        release.set()
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert recv_until_eof(client) == b"done\n"


def test_server_close_does_not_wait_for_daemon_threads(make_server: Any) -> None:
    # The stdlib joins only non-daemon threads in server_close(): with daemon_threads (as
    # http.server.ThreadingHTTPServer sets), a handler stuck on an idle keep-alive client
    # must not keep server_close() from returning.
    handler = blocking_handler()

    class Server(netserve.ThreadingTCPServer):
        daemon_threads = True

    server = make_server(Server, handler)
    assert server.block_on_close is True
    serving = start_serving(server, poll_interval=0.01)
    with socket.create_connection(server.server_address, timeout=WAIT):
        assert handler.started.wait(WAIT)
        server.shutdown()
        serving.join(WAIT)
        closer, outcome = close_in_thread(server)
        closer.join(1.0)
        returned = not closer.is_alive()
        handler.release.set()
        closer.join(WAIT)
    assert returned, "server_close() waited for a daemon handler thread"
    assert outcome == {"handler_finished": False}


# --- ForkingMixIn --------------------------------------------------------------------------------


@needs_fork
def test_forking_server_serves_in_child_processes(make_server: Any) -> None:
    server = make_server(netserve.ForkingTCPServer, PidHandler)
    assert server.active_children is None  # nothing forked yet
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"pid?\n")
        server.handle_request()
        pid = int(recv_until_eof(client).split()[0])
    assert pid != os.getpid()
    assert server.active_children == {pid}
    server.server_close()
    assert server.active_children == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped by server_close()


@needs_fork
def test_forking_server_counts_connections_in_children_toward_the_limits(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(
        netserve.ForkingTCPServer, PidHandler, max_connections=1, max_connections_per_ip=1
    )
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as first:
        first.sendall(b"hold")  # half a line: its child waits for the rest
        with socket.create_connection(server.server_address, timeout=WAIT) as second:
            assert recv_until_eof(second) == b""  # refused: the first holds the only place
        assert server.refused["max_connections"] == 1
        first.sendall(b"\n")
        assert int(recv_until_eof(first).split()[0]) != os.getpid()
    # once the first child has exited (and been reaped), its place is free again
    assert wait_for(lambda: not server.active_children)
    with socket.create_connection(server.server_address, timeout=WAIT) as third:
        third.sendall(b"x\n")
        assert recv_until_eof(third) != b""
    server.shutdown()


@needs_fork
def test_forking_server_drain_shuts_what_children_still_serve(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(netserve.ForkingTCPServer, PidHandler)
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"half")  # in flight in a child until the drain timeout
        assert wait_for(lambda: server.active_children)
        began = time.monotonic()
        server.shutdown(drain_timeout=0.3)
        assert time.monotonic() - began < WAIT / 2
        assert recv_until_eof(client) == b""  # its connection was shut: the child ended
    assert not server.active_children
    assert "closing connection from 127.0.0.1" in caplog.text


@needs_fork
def test_forking_server_drain_ends_children_holding_the_loop_at_max_children(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Server(netserve.ForkingTCPServer):
        max_children = 1  # the loop then waits in collect_children() for the child to exit

    server = make_server(Server, PidHandler)
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"half")  # in flight in a child until the drain timeout
        assert wait_for(lambda: server.active_children)
        pids = set(server.active_children)
        stopper = threading.Thread(target=server.shutdown, kwargs={"drain_timeout": 0.3})
        stopper.start()
        stopper.join(WAIT)
        try:
            assert not stopper.is_alive()
            assert recv_until_eof(client) == b""  # its connection was shut: the child ended
        finally:
            if stopper.is_alive():  # the loop still waits for its unreaped child: end it
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                stopper.join(WAIT)
    assert not server.active_children
    assert "closing connection from 127.0.0.1" in caplog.text


class CloseEarly(netserve.BaseRequestHandler):
    """Answers, closes the connection, then goes on working for a while."""

    def handle(self) -> None:
        self.request.sendall(b"done\n")
        self.request.close()
        time.sleep(1.5)


@needs_fork
def test_a_child_that_closes_its_connection_early_ends_it_at_once(make_server: Any) -> None:
    server = make_server(netserve.ForkingTCPServer, CloseEarly)
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as first:
        began = time.monotonic()
        assert recv_until_eof(first) == b"done\n"
        assert time.monotonic() - began < 1.0  # not when the child exits
        with socket.create_connection(server.server_address, timeout=WAIT) as second:
            assert recv_until_eof(second) == b"done\n"  # no sibling holds it either
            assert time.monotonic() - began < 1.4
    server.shutdown()


class ForksAndTerminates(netserve.BaseRequestHandler):
    """Forks a process of its own, ends it with SIGTERM, and says how it ended."""

    def handle(self) -> None:
        ready_reader, ready_writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(ready_writer, b".")  # past fork: a signal now is not lost in it
                time.sleep(WAIT)
            finally:
                os._exit(0)
        os.close(ready_writer)
        os.read(ready_reader, 1)
        os.close(ready_reader)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        self.request.sendall(b"%d\n" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else b"0\n")


@needs_fork
def test_a_process_forked_by_a_handler_still_dies_of_sigterm(make_server: Any) -> None:
    # the child's SIGTERM handler (which shuts its connection for a drain) is inherited
    server = make_server(netserve.ForkingTCPServer, ForksAndTerminates)
    start_serving(server, poll_interval=0.05)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        assert recv_until_eof(client) == b"%d\n" % signal.SIGTERM
    server.shutdown()


@needs_fork
def test_children_reaped_by_a_collect_children_override_free_their_places(
    make_server: Any,
) -> None:
    class Server(netserve.ForkingTCPServer):
        def collect_children(self, *, blocking: bool = False) -> None:
            for pid in list(self.active_children or ()):  # reaping its own, stdlib-style
                try:
                    done, _ = os.waitpid(pid, 0 if blocking else os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.active_children.discard(pid)

    server = make_server(Server, PidHandler, max_connections=2)
    start_serving(server, poll_interval=0.05)
    for _ in range(4):
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            client.sendall(b"x\n")
            assert recv_until_eof(client) != b""
        assert wait_for(lambda: not server.active_children)
    assert server.refused["max_connections"] == 0
    assert len(server._fork_strategy._tokens) <= 1  # the stand-ins of reaped children go
    server.shutdown()


@needs_fork
@pytest.mark.parametrize("kind", ["ForkingTCPServer", "ForkingUDPServer"])
def test_a_child_still_dies_of_sigterm_as_in_the_stdlib(
    make_server: Any, kind: str, tmp_path: Any
) -> None:
    started = tmp_path / "started"

    class Slow(netserve.BaseRequestHandler):
        def handle(self) -> None:
            with open(started, "w"):
                pass
            time.sleep(WAIT)  # a backend, say

    server = make_server(getattr(netserve, kind), Slow)
    start_serving(server, poll_interval=0.05)
    sock_type = socket.SOCK_STREAM if kind == "ForkingTCPServer" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as client:
        client.connect(server.server_address)
        client.send(b"x")
        assert wait_for(lambda: server.active_children and started.exists())
        [pid] = server.active_children
        os.kill(pid, signal.SIGTERM)  # as systemd or a process group signal would
        result = wait_exited(pid)
    assert (result.si_code, result.si_status) == (os.CLD_KILLED, signal.SIGTERM)
    server.shutdown()


@needs_fork
def test_child_exit_status_reflects_handler_outcome(make_server: Any) -> None:
    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"%d\n" % os.getpid())
            if self.rfile.readline() == b"fail\n":
                raise ValueError("child failure")

    class QuietServer(netserve.ForkingTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # in the child

    server = make_server(QuietServer, Handler)
    statuses = []
    for line in (b"ok\n", b"fail\n"):
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            client.sendall(line)
            server.handle_request()
            pid = int(recv_line(client))
            assert recv_until_eof(client) == b""
        info = wait_exited(pid)
        assert info.si_code == os.CLD_EXITED
        statuses.append(info.si_status)
    assert statuses == [0, 1]


@needs_fork
def test_handle_timeout_collects_exited_children(make_server: Any) -> None:
    server = make_server(netserve.ForkingTCPServer, PidHandler)
    assert server.timeout == 300
    server.timeout = 0.05
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"pid?\n")
        server.handle_request()
        pid = int(recv_until_eof(client).split()[0])
    wait_exited(pid)
    assert server.active_children == {pid}  # exited, not yet collected
    server.handle_request()  # nothing comes: handle_timeout() collects
    assert server.active_children == set()


@needs_fork
def test_collect_children_blocking_waits_for_all(make_server: Any) -> None:
    server = make_server(netserve.ForkingTCPServer, PidHandler)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"pid?\n")
        server.handle_request()
        server.collect_children(blocking=True)
        assert server.active_children == set()
        assert recv_until_eof(client) != b""


@needs_fork
def test_forking_server_reaps_only_its_own_children(make_server: Any) -> None:
    read_end, write_end = os.pipe()
    own = os.fork()
    if own == 0:  # an unrelated child: exits with 7 once the pipe is closed
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(20)  # never outlives a failed test for long
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(7)
    os.close(read_end)
    try:

        class Server(netserve.ForkingTCPServer):
            max_children = 2  # stdlib: waitpid(-1) at the limit could take our child

        server = make_server(Server, PidHandler)
        with run_server(server, poll_interval=0.01) as address:
            pids = {int(request(address).split()[0]) for _ in range(6)}
        assert own not in pids
        assert server.active_children == set()  # server_close() reaped all of its own
        assert os.waitpid(own, os.WNOHANG) == (0, 0)  # ours: still running, not reaped
    finally:
        os.close(write_end)
        pid, status = os.waitpid(own, 0)
    assert pid == own
    assert os.waitstatus_to_exitcode(status) == 7


@needs_fork
def test_forking_server_at_max_children_leaves_exited_foreign_child(make_server: Any) -> None:
    own = os.fork()
    if own == 0:
        os._exit(9)
    wait_exited(own)  # a zombie now, waiting to be reaped by us

    class Server(netserve.ForkingTCPServer):
        max_children = 1  # every request reaches the limit

    try:
        server = make_server(Server, PidHandler)
        with run_server(server, poll_interval=0.01) as address:
            for _ in range(4):
                assert request(address) != b""
        assert server.active_children == set()
    finally:
        pid, status = os.waitpid(own, 0)  # ChildProcessError if the server reaped it
    assert pid == own
    assert os.waitstatus_to_exitcode(status) == 9


@needs_fork
def test_max_children_bounds_concurrent_children(make_server: Any) -> None:
    class Holding(netserve.StreamRequestHandler):
        timeout = WAIT  # a child left behind by a failed test exits on its own

        def handle(self) -> None:
            self.wfile.write(b"%d\n" % os.getpid())
            self.rfile.readline()  # until the client lets it go

    class Server(netserve.ForkingTCPServer):
        max_children = 2

    server = make_server(Server, Holding)
    with run_server(server, poll_interval=0.01) as address:
        clients = []
        try:
            for _ in range(3):
                c = socket.create_connection(address, timeout=WAIT)
                clients.append(c)
            first = int(recv_line(clients[0]))
            second = int(recv_line(clients[1]))
            assert first != second
            # the third request waits until one of the two children exits
            clients[2].settimeout(0.3)
            with pytest.raises(TimeoutError):
                clients[2].recv(1)
            assert len(server.active_children) == 2
            clients[0].sendall(b"go\n")
            assert recv_until_eof(clients[0]) == b""
            clients[2].settimeout(WAIT)
            third = int(recv_line(clients[2]))
            assert third not in (first, second, os.getpid())  # a new child
            assert len(server.active_children) <= 2
            for c in clients[1:]:
                c.sendall(b"go\n")
                assert recv_until_eof(c) == b""
        finally:
            for c in clients:
                c.close()
    assert server.active_children == set()


@needs_fork
def test_forking_server_close_without_block_on_close_does_not_wait(make_server: Any) -> None:
    class Holding(netserve.StreamRequestHandler):
        timeout = WAIT

        def handle(self) -> None:
            self.wfile.write(b"%d\n" % os.getpid())
            self.rfile.readline()

    class Server(netserve.ForkingTCPServer):
        block_on_close = False

    server = make_server(Server, Holding)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        pid = int(recv_line(client))
        start = time.monotonic()
        server.server_close()
        assert time.monotonic() - start < 1.0
        assert server.active_children == {pid}  # still running
        client.sendall(b"go\n")
        assert recv_until_eof(client) == b""
    reaped, status = os.waitpid(pid, 0)
    assert reaped == pid
    assert os.waitstatus_to_exitcode(status) == 0


@needs_fork
def test_forking_server_close_with_block_on_close_waits_for_children(make_server: Any) -> None:
    class Holding(netserve.StreamRequestHandler):
        timeout = WAIT

        def handle(self) -> None:
            self.wfile.write(b"%d\n" % os.getpid())
            self.rfile.readline()

    server = make_server(netserve.ForkingTCPServer, Holding)
    with socket.create_connection(server.server_address, timeout=WAIT) as client:
        server.handle_request()
        pid = int(recv_line(client))
        closed = threading.Event()
        closer = threading.Thread(target=lambda: (server.server_close(), closed.set()), daemon=True)
        closer.start()
        assert not closed.wait(0.2)  # waiting for the child
        client.sendall(b"go\n")
        assert closed.wait(WAIT)
        closer.join(WAIT)
    assert server.active_children == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --- the mixins on a server class of the standard library -------------------------------------


class _StdlibShout(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(b"%d %d " % (os.getpid(), threading.get_ident()) + line.upper())


def _serve_stdlib_host(server: socketserver.TCPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


@pytest.mark.parametrize(
    "mixin", ["ThreadingMixIn", pytest.param("ForkingMixIn", marks=needs_fork)]
)
def test_a_mixin_on_a_stdlib_server_class_runs_the_stdlibs_code(mixin: str) -> None:
    # `import netserve as socketserver` with `class S(socketserver.ThreadingMixIn,
    # http.server.HTTPServer)`: that server class has no strategies, the stdlib's mixin does
    class Server(getattr(netserve, mixin), socketserver.TCPServer):  # type: ignore[misc]
        daemon_threads = True

    server = Server((HOST, 0), _StdlibShout)
    assert isinstance(server, getattr(socketserver, mixin))
    thread = _serve_stdlib_host(server)
    try:
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            client.sendall(b"hi\n")
            pid, ident, reply = recv_line(client).split()
        assert reply == b"HI"
        if mixin == "ThreadingMixIn":
            assert (int(pid), int(ident)) != (os.getpid(), thread.ident)  # a thread of its own
        else:
            assert int(pid) != os.getpid()
            assert server.active_children is not None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
    if mixin == "ForkingMixIn":
        assert not server.active_children  # reaped by the stdlib's server_close()


def test_a_subclass_override_on_a_stdlib_server_class_is_kept() -> None:
    served_by: list[str] = []

    class Mine(netserve.ThreadingMixIn):
        def process_request_thread(self, request: Any, client_address: Any) -> None:
            served_by.append("mine")
            super().process_request_thread(request, client_address)

    class Server(Mine, socketserver.TCPServer):
        pass

    server = Server((HOST, 0), _StdlibShout)
    thread = _serve_stdlib_host(server)
    try:
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            client.sendall(b"hi\n")
            assert recv_line(client).endswith(b" HI\n")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
    assert served_by == ["mine"]


def test_the_pool_mixin_refuses_a_stdlib_server_class() -> None:
    with pytest.raises(TypeError, match="ThreadPoolMixIn needs a netserve server class"):

        class Server(netserve.ThreadPoolMixIn, socketserver.TCPServer):  # type: ignore[misc]
            pass


# --- a server made before fork(), closed from its own handler, its threads' names ---------------


@needs_fork
@pytest.mark.parametrize("kind", ["ThreadPoolTCPServer", "ThreadingTCPServer"])
def test_a_server_made_before_fork_serves_in_the_child(kind: str) -> None:
    # build, fork (to daemonize, say), then serve in the child: the pool's threads stayed
    # in the parent, so the child starts its own
    server = getattr(netserve, kind)((HOST, 0), _StdlibShout)
    address = server.server_address
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            server.timeout = WAIT
            server.handle_request()
            server.server_close()  # waits for the request: ends only once it was served
            status = 0
        finally:
            os._exit(status)
    server.socket.close()  # the parent's copy
    try:
        with socket.create_connection(address, timeout=WAIT) as client:
            client.sendall(b"hi\n")
            child_pid, _, reply = recv_line(client).split()
        assert (int(child_pid), reply) == (pid, b"HI")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("kind", ["ThreadPoolTCPServer", "ThreadingTCPServer"])
def test_server_close_from_its_own_handler_does_not_wait_for_that_handler(kind: str) -> None:
    # the stdlib raises "cannot join current thread" here; waiting would never end
    closed = threading.Event()

    class CloseServer(netserve.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.server.server_close()
            closed.set()
            self.wfile.write(b"closed\n")

    server = getattr(netserve, kind)((HOST, 0), CloseServer)
    server.drain_timeout = WAIT * 2  # a drain that counted the caller would outlast the test
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            client.sendall(b"close\n")
            assert closed.wait(WAIT)
            assert recv_line(client) == b"closed\n"
    finally:
        server.shutdown()
        thread.join(WAIT)


def test_threads_are_named_as_in_the_stdlib(make_server: Any) -> None:
    names: list[str] = []

    class Name(netserve.BaseRequestHandler):
        def handle(self) -> None:
            names.append(threading.current_thread().name)

    server = make_server(netserve.ThreadingTCPServer, Name)
    with socket.create_connection(server.server_address, timeout=WAIT):
        server.handle_request()
    server.server_close()
    [name] = names
    assert re.fullmatch(r"Thread-\d+ \(process_request_thread\)", name), name


@pytest.mark.parametrize("kind", ["ThreadPoolTCPServer", "ThreadingTCPServer"])
def test_server_close_from_a_handler_keeps_its_own_client_past_the_drain_timeout(
    kind: str,
) -> None:
    # another request outlasts the drain: the forced close cuts that one, not the caller's
    release = threading.Event()
    closed = threading.Event()

    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            if self.rfile.readline() == b"hold\n":
                release.wait(WAIT)
                return
            self.server.server_close()
            closed.set()
            self.wfile.write(b"closed\n")

    server = getattr(netserve, kind)((HOST, 0), Handler)
    server.drain_timeout = 0.2
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=WAIT) as holder:
            holder.sendall(b"hold\n")
            with socket.create_connection(server.server_address, timeout=WAIT) as closer:
                closer.sendall(b"close\n")
                assert closed.wait(WAIT)
                assert recv_line(closer) == b"closed\n"
            assert recv_until_eof(holder) == b""  # cut by the forced close
    finally:
        release.set()
        server.shutdown()
        thread.join(WAIT)


def test_server_close_from_the_only_pool_thread_does_not_wait_for_the_queue() -> None:
    # the queued request can only run on the caller's thread, once its request ends
    class Handler(netserve.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            if line == b"close\n":
                began = time.monotonic()
                self.server.server_close()
                self.wfile.write(b"closed after %.1f s\n" % (time.monotonic() - began))
            else:
                self.wfile.write(b"served " + line)

    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 1
        drain_timeout = WAIT * 2

    server = Server((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(server.server_address, timeout=WAIT) as closer,
            socket.create_connection(server.server_address, timeout=WAIT) as queued,
        ):
            queued.sendall(b"queued\n")
            assert wait_for(lambda: server._concurrency.in_flight == 2)  # one busy, one queued
            closer.sendall(b"close\n")
            reply = recv_line(closer)
            assert reply.startswith(b"closed after ")
            assert float(reply.split()[2]) < WAIT  # not drain_timeout (2 * WAIT) and more
            closer.close()
            assert recv_line(queued) == b"served queued\n"
    finally:
        server.shutdown()
        thread.join(WAIT)


@pytest.mark.parametrize("overflow", ["reject", "wait"])
def test_serve_forever_returns_once_a_handler_closed_the_server(
    caplog: pytest.LogCaptureFixture, overflow: str
) -> None:
    # the stdlib spins on accept() failing with EBADF until shutdown() is called; and the
    # listener's descriptor number, free again, may be another socket's by the next turn
    held: list[tuple[socket.socket, socket.socket]] = []
    errors: list[BaseException] = []

    class Handler(netserve.BaseRequestHandler):
        def handle(self) -> None:
            self.server.server_close()
            held.append(socket.socketpair())  # takes the lowest free descriptors

    class Server(netserve.ThreadPoolTCPServer):
        max_workers = 1
        max_queued = 0

    def serve() -> None:
        try:
            server.serve_forever(poll_interval=None)  # no periodic wakeup to rely on
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.INFO, logger="netserve")
    Server.overflow = overflow  # type: ignore[assignment]
    server = Server((HOST, 0), Handler)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=WAIT) as client:
            assert recv_until_eof(client) == b""
        thread.join(WAIT)
        assert not thread.is_alive()
        assert errors == []
        assert "the listening socket was closed" in caplog.text
    finally:
        server.shutdown()  # returns at once once the loop has ended
        thread.join(WAIT)
        for pair in held:
            for sock in pair:
                sock.close()
