"""AsyncServer: listening sockets, limits, idle timeout, graceful and fast stops, heartbeat,
and no leaks, over real loopback sockets on both loops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import netserve.aio as aio
from netserve import BindError, ConfigError
from netserve.aio import _server as aio_server

from .conftest import (
    LOOPS,
    WAIT,
    ask,
    closed_by_server,
    connect,
    recv_exactly,
    recv_until,
    serving,
    wait_until,
)


class Reverse(aio.LineHandler):
    __slots__ = ()

    def handle_line(self, line: bytes) -> bytes:
        return line[::-1]


class StreamReverse(aio.AsyncRequestHandler):
    __slots__ = ()

    async def handle(self) -> None:
        while line := await self.readline():
            self.write(line[:-1][::-1] + b"\n")


@pytest.fixture(params=[Reverse, StreamReverse], ids=["line", "stream"])
def handler(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


# --- listening --------------------------------------------------------------------------------


def test_serves_on_a_socket_passed_in_and_leaves_it_open(loop: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = aio.AsyncServer(Reverse, [listener])

    async def main() -> None:
        await server.start()
        assert server.addresses == [listener.getsockname()]
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"abc\n")
        assert await reader.readline() == b"cba\n"
        writer.close()
        await server.shutdown()

    aio.run(main(), loop)
    assert listener.fileno() != -1  # the caller's socket stays the caller's
    listener.close()


def test_serves_on_several_addresses_including_unix(loop: str, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = aio.AsyncServer(Reverse, ["127.0.0.1:0", f"unix:{path}"])

    async def main() -> None:
        await server.start()
        tcp, _unix = server.addresses
        reader, writer = await asyncio.open_connection(*tcp)
        writer.write(b"tcp\n")
        assert await reader.readline() == b"pct\n"
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"unix\n")
        assert await reader.readline() == b"xinu\n"
        writer.close()
        await server.shutdown()

    aio.run(main(), loop)
    assert not path.exists()  # the socket file the server made is removed


def test_an_address_in_use_is_a_bind_error_naming_it(loop: str) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    server = aio.AsyncServer(Reverse, ["127.0.0.1:0", f"127.0.0.1:{port}"])
    with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{port}"):
        aio.run(server.start(), loop)
    assert server.addresses == []
    taken.close()


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="handler"):
        aio.AsyncServer(object, ["127.0.0.1:0"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_connections"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], max_connections=0)
    with pytest.raises(ConfigError, match="idle_timeout"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], idle_timeout=0)
    with pytest.raises(ConfigError, match="drain_timeout"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], drain_timeout=-1)
    with pytest.raises(ConfigError, match="threads"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], threads=0)
    with pytest.raises(ConfigError, match="listen"):
        aio.AsyncServer(Reverse, [])
    with pytest.raises(ConfigError, match="bad address"):
        aio.run(aio.AsyncServer(Reverse, ["nowhere"]).start(), "asyncio")


# --- limits -----------------------------------------------------------------------------------


def test_max_connections_refuses_the_excess_at_once_and_counts_them(
    loop: str, handler: type, caplog: pytest.LogCaptureFixture, clients: list[socket.socket]
) -> None:
    with serving(handler, loop, max_connections=3) as running:
        for _ in range(3):
            clients.append(running.connect())
            assert ask(clients[-1], b"in") == b"ni\n"
        refused = [running.connect() for _ in range(5)]
        clients.extend(refused)
        for sock in refused:
            assert closed_by_server(sock)
        assert running.server.refused["max_connections"] == 5
        assert ask(clients[0], b"still") == b"llits\n"
        clients[0].close()  # room again
        assert wait_until(lambda: running.server.connections == 2)
        clients.append(running.connect())
        assert ask(clients[-1], b"again") == b"niaga\n"
    refusals = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(refusals) == 1  # at most once a second per reason
    assert "max_connections (1 refused so far)" in refusals[0]


def test_a_refused_client_gets_the_busy_message_then_the_close(
    loop: str, handler: type, clients: list[socket.socket]
) -> None:
    with serving(handler, loop, max_connections=1, busy_message=b"busy, try later\n") as running:
        clients.append(running.connect())
        assert ask(clients[-1], b"in") == b"ni\n"
        refused = running.connect()
        clients.append(refused)
        assert recv_until(refused, b"\n") == b"busy, try later\n"
        assert closed_by_server(refused)
        assert running.server.refused == {"max_connections": 1}
        assert ask(clients[0], b"still") == b"llits\n"


def _tcp_state(local_port: int, remote_port: int) -> str | None:
    """The state (hex, as ``/proc/net/tcp`` has it: 01 is ESTABLISHED) of the loopback TCP
    socket from *local_port* to *remote_port*; None once there is none."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (
            int(fields[1].rpartition(":")[2], 16) == local_port
            and int(fields[2].rpartition(":")[2], 16) == remote_port
        ):
            return fields[3]
    return None


def test_a_busy_message_the_client_does_not_read_does_not_hold_the_connection(
    loop: str, clients: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sync servers send what the socket takes at once; a refused client that never
    # reads a large busy_message must not keep a connection (and a descriptor) for ever
    monkeypatch.setattr(aio_server, "LINGER_TIMEOUT", 0.2)
    message = b"busy " * (8 << 20)
    with serving(Reverse, loop, max_connections=1, busy_message=message) as running:
        clients.append(running.connect())
        assert ask(clients[-1], b"in") == b"ni\n"
        refused = running.connect(small_buffers=True)
        clients.append(refused)
        assert wait_until(lambda: running.server.refused["max_connections"] == 1)
        server_port, client_port = running.address[1], refused.getsockname()[1]
        assert wait_until(lambda: _tcp_state(server_port, client_port) != "01")
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := refused.recv(1 << 16):
                received += chunk
        assert message.startswith(received)
        assert len(received) < len(message)


def test_max_connections_per_ip(loop: str, handler: type, clients: list[socket.socket]) -> None:
    with serving(handler, loop, max_connections_per_ip=2) as running:
        clients.extend(running.connect("127.0.0.1") for _ in range(2))
        for sock in clients:
            assert ask(sock, b"ok") == b"ko\n"
        refused = running.connect("127.0.0.1")
        clients.append(refused)
        assert closed_by_server(refused)
        other_ip = running.connect("127.0.0.2")  # another address: its own count
        clients.append(other_ip)
        assert ask(other_ip, b"two") == b"owt\n"
        assert running.server.refused == {"max_connections_per_ip": 1}
        clients[0].close()
        assert wait_until(lambda: running.server.connections == 2)
        clients.append(running.connect("127.0.0.1"))
        assert ask(clients[-1], b"back") == b"kcab\n"


# --- idle timeout -----------------------------------------------------------------------------


def test_a_silent_client_is_closed_after_the_idle_timeout(
    loop: str, handler: type, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    with (
        serving(handler, loop, idle_timeout=0.3) as running,
        running.connect() as idle,
        running.connect() as busy,
    ):
        start = time.monotonic()
        client = f"127.0.0.1:{idle.getsockname()[1]}"
        # the busy client talks more often than the timeout: it stays
        while time.monotonic() - start < 0.6:
            assert ask(busy, b"tick") == b"kcit\n"
            time.sleep(0.05)
        assert closed_by_server(idle)
        elapsed = time.monotonic() - start
        assert 0.3 <= elapsed < 0.3 * 1.25 + 1.0  # within a sweep (and some slack)
        assert ask(busy, b"alive") == b"evila\n"
    assert f"closed connection from {client}: idle for 0.3 s" in caplog.text


def test_a_busy_blocking_handler_is_not_idle(loop: str) -> None:
    class Slow(aio.LineHandler):
        blocking = True

        def handle_line(self, line: bytes) -> bytes:
            time.sleep(0.5)  # longer than the idle timeout: the client is waiting for us
            return line

    with serving(Slow, loop, idle_timeout=0.2) as running, running.connect() as sock:
        assert ask(sock, b"slow") == b"slow\n"


#: A reply much larger than the kernel buffers of a client with small ones.
BIG_REPLY = b"z" * (1 << 20)


class Download(aio.LineHandler):
    def handle_line(self, line: bytes) -> bytes:
        return BIG_REPLY


class StreamDownload(aio.AsyncRequestHandler):
    async def handle(self) -> None:
        while await self.readline():
            self.write(BIG_REPLY + b"\n")
            await self.drain()


@pytest.fixture(params=[Download, StreamDownload], ids=["line", "stream"])
def download(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


def _read_slowly(sock: socket.socket, size: int, chunk: int, pause: float) -> int:
    """Read *size* bytes, *chunk* at a time with *pause* seconds between reads; return how
    many came before the end of input (or a reset)."""
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while received < size and (data := sock.recv(chunk)):
            received += len(data)
            time.sleep(pause)  # the client's pace
    return received


def test_a_client_reading_a_large_reply_slowly_is_not_idle(
    loop: str, download: type, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    idle_timeout = 0.5
    with (
        serving(download, loop, idle_timeout=idle_timeout) as running,
        running.connect(small_buffers=True) as sock,
    ):
        sock.sendall(b"get\n")
        start = time.monotonic()
        # about 650 KB/s: the client's window (64 KiB) opens every ~0.1 s, and the whole
        # reply takes about three idle timeouts
        received = _read_slowly(sock, len(BIG_REPLY) + 1, 16384, 0.025)
        assert time.monotonic() - start > idle_timeout
        assert received == len(BIG_REPLY) + 1
    assert "idle for" not in caplog.text


def test_a_client_that_reads_none_of_a_large_reply_is_closed_after_the_idle_timeout(
    loop: str, download: type, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="netserve")
    idle_timeout = 0.3
    with (
        serving(download, loop, idle_timeout=idle_timeout) as running,
        running.connect(small_buffers=True) as sock,
    ):
        assert wait_until(lambda: running.server.connections == 1)  # accepted
        sock.sendall(b"get\n")
        start = time.monotonic()
        assert wait_until(lambda: running.server.connections == 0)
        assert idle_timeout <= time.monotonic() - start < idle_timeout * 1.25 + 1.0
    assert "idle for 0.3 s" in caplog.text


# --- stopping ---------------------------------------------------------------------------------


def test_graceful_stop_lets_an_in_flight_request_finish(
    loop: str, clients: list[socket.socket]
) -> None:
    started = threading.Event()

    class Slow(aio.LineHandler):
        blocking = True

        def handle_line(self, line: bytes) -> bytes:
            started.set()
            time.sleep(0.3)
            return b"done " + line

    with serving(Slow, loop, drain_timeout=WAIT) as running:
        idle = running.connect()
        busy = running.connect()
        clients.extend([idle, busy])
        assert ask(idle, b"warm") == b"done warm\n"
        busy.sendall(b"slow\n")
        assert started.wait(WAIT)
        threading.Thread(target=running.server.request_stop).start()  # from another thread
        assert closed_by_server(idle)  # nothing in flight: closed at once
        with pytest.raises(ConnectionRefusedError):
            connect(running.address)  # accepting stopped at once
        assert recv_until(busy, b"\n") == b"done slow\n"  # the reply reaches the client
        assert closed_by_server(busy)
        running.thread.join(WAIT)
        assert not running.thread.is_alive()


def test_drain_timeout_closes_what_is_left_with_a_log_line_each(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Stuck(aio.LineHandler):
        blocking = True

        def handle_line(self, line: bytes) -> bytes:
            entered.set()
            release.wait(WAIT)
            return line

    class StuckStream(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            entered.set()
            await asyncio.sleep(WAIT)  # in flight: never finishes by itself

    for handler in (Stuck, StuckStream):
        caplog.clear()
        entered.clear()
        with serving(handler, loop, drain_timeout=0.2) as running, running.connect() as sock:
            sock.sendall(b"x\n")
            assert entered.wait(WAIT)  # the request is in flight
            assert wait_until(lambda: running.call(_waiting, running.server) == 0)
            client = f"127.0.0.1:{sock.getsockname()[1]}"
            start = time.monotonic()
            running.server.request_stop()
            assert closed_by_server(sock)
            release.set()  # the stuck thread returns: its connection is then done
            running.thread.join(WAIT)
            assert 0.2 <= time.monotonic() - start < WAIT / 2
        assert (
            f"closing connection from {client}: still busy after the 0.2 s drain timeout"
            in caplog.text
        )


def _waiting(server: aio.AsyncServer) -> int:
    """Connections waiting for their client (idle by the server's measure)."""
    return sum(1 for c in server._connections.values() if c._ns_waiting_for_client())


def test_graceful_stop_ends_keep_alive_stream_handlers_at_a_request_boundary(
    loop: str,
) -> None:
    finished = threading.Event()

    class KeepAlive(StreamReverse):
        async def finish(self) -> None:
            finished.set()

    with serving(KeepAlive, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        assert ask(sock, b"one") == b"eno\n"
        start = time.monotonic()
        running.server.request_stop()
        assert finished.wait(WAIT)  # readline() saw end-of-input: handle() returned
        assert closed_by_server(sock)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2  # not the drain timeout


def test_graceful_stop_lets_a_request_read_in_two_parts_finish(loop: str) -> None:
    cut: list[BaseException] = []

    class HeaderThenBody(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            while header := await self.readline():
                try:
                    body = await self.readexactly(int(header))
                except asyncio.IncompleteReadError as exc:
                    cut.append(exc)
                    return
                self.write(b"got " + body + b"\n")

    with serving(HeaderThenBody, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"3\none")  # a whole request
        assert recv_until(sock, b"\n") == b"got one\n"
        sock.sendall(b"5\n")  # the header of the next: the handler waits for its body
        assert wait_until(lambda: running.call(_wanted, running.server) == [5])
        running.server.request_stop()
        assert wait_until(lambda: running.server.stopping)
        sock.sendall(b"hello")
        assert recv_until(sock, b"\n") == b"got hello\n"
        assert closed_by_server(sock)  # then the stop ended its input: between requests
        running.thread.join(WAIT)
    assert cut == []


@pytest.mark.parametrize("blocking", [False, True])
def test_graceful_stop_lets_a_message_partly_received_finish(loop: str, blocking: bool) -> None:
    class Echo(aio.LineHandler):
        def handle_line(self, line: bytes) -> bytes:
            return b"got " + line

    Echo.blocking = blocking
    with serving(Echo, loop, drain_timeout=WAIT) as running:
        with running.connect() as idle, running.connect() as sock:
            assert ask(idle, b"a") == b"got a\n"
            assert ask(sock, b"b") == b"got b\n"
            sock.sendall(b"hal")  # part of the next line: in flight
            assert wait_until(lambda: running.call(_partial, running.server) == 1)
            running.server.request_stop()
            assert closed_by_server(idle)  # between messages: closed at once
            sock.sendall(b"f\nnot handled\n")
            assert recv_until(sock, b"\n") == b"got half\n"
            assert closed_by_server(sock)
        running.thread.join(WAIT)
        assert not running.thread.is_alive()


def _partial(server: aio.AsyncServer) -> int:
    """Connections holding part of a message."""
    return sum(1 for c in server._connections.values() if getattr(c, "_ns_framer", None))


def test_graceful_stop_ends_an_idle_readexactly_loop_quietly(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Framed(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            while True:
                size = int(await self.readexactly(2))
                self.write(await self.readexactly(size))

    caplog.set_level(logging.DEBUG, logger="netserve")
    with serving(Framed, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"02ok")
        assert recv_exactly(sock, 2) == b"ok"
        start = time.monotonic()
        running.server.request_stop()
        assert closed_by_server(sock)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2  # not the drain timeout
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_connection_is_freed_when_it_ends_without_the_garbage_collector(
    loop: str, handler: type
) -> None:
    counted = type("Counted", (handler,), {"__slots__": ()})

    def alive() -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is counted)

    gc.disable()  # what a cycle keeps alive stays: only reference counts free anything
    try:
        with serving(counted, loop) as running:
            for _ in range(50):
                with running.connect() as sock:
                    assert ask(sock, b"abc") == b"cba\n"
            assert wait_until(lambda: running.server.connections == 0)
            assert wait_until(lambda: alive() == 0), f"{alive()} handlers still alive"
    finally:
        gc.enable()


def test_graceful_stop_ends_a_handler_that_only_reads_if_it_says_so(loop: str) -> None:
    received: list[bytes] = []

    class Sink(aio.AsyncRequestHandler):
        stop_at_idle_reads = True  # every line is a message of its own

        async def handle(self) -> None:
            while line := await self.readline():
                received.append(line)

    with serving(Sink, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"one\n")
        assert wait_until(lambda: received == [b"one\n"])
        start = time.monotonic()
        running.server.request_stop()
        assert closed_by_server(sock)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2  # not the drain timeout


def _wanted(server: aio.AsyncServer) -> list[int]:
    """What each stream handler's read waits for (a byte count; -1: a line)."""
    return [c._ns_want for c in server._connections.values() if hasattr(c, "_ns_want")]


def test_graceful_stop_ends_a_read_in_another_task_once_the_handler_replies(loop: str) -> None:
    class ReplyLater(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            line = await self.readline()
            reader = asyncio.ensure_future(self.readline())  # waits for the next request
            for _ in range(int(WAIT / 0.01)):  # the reply is made after the stop began
                if self.server.stopping:
                    break
                await asyncio.sleep(0.01)
            self.write(line)  # between requests now: the waiting read ends
            assert await reader == b""

    with serving(ReplyLater, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"one\n")
        assert wait_until(lambda: running.call(_wanted, running.server) == [-1])
        start = time.monotonic()
        running.server.request_stop()
        assert recv_until(sock, b"\n") == b"one\n"
        assert closed_by_server(sock)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2  # not the drain timeout


def test_fast_stop_closes_everything_now_and_cancels_handlers(loop: str) -> None:
    cancelled = threading.Event()
    entered = threading.Event()

    class Forever(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            entered.set()
            try:
                await asyncio.sleep(WAIT)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with serving(Forever, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"go\n")
        assert entered.wait(WAIT)  # the request is in flight
        assert wait_until(lambda: running.call(_waiting, running.server) == 0)
        start = time.monotonic()
        running.server.request_stop(graceful=False)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2
        assert cancelled.is_set()
        assert closed_by_server(sock)


@pytest.mark.parametrize("graceful", [False, True], ids=["fast", "graceful"])
@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_stop_does_not_wait_for_a_call_stuck_in_the_default_executor(
    loop_name: str, graceful: bool, caplog: pytest.LogCaptureFixture
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(3 * WAIT)

    class ToThread(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            await asyncio.to_thread(stuck)

    drain_timeout = 0.2
    try:
        with (
            serving(ToThread, loop_name, drain_timeout=drain_timeout) as running,
            running.connect() as sock,
        ):
            sock.sendall(b"go\n")
            assert entered.wait(WAIT)
            start = time.monotonic()
            running.server.request_stop(graceful=graceful)
            running.thread.join(WAIT)
            stopped_after = time.monotonic() - start
            assert not running.thread.is_alive(), "serve() waited for the stuck call"
    finally:
        release.set()  # a failed test: let the call end, and the server with it
    assert stopped_after < drain_timeout + aio.POOL_JOIN_TIMEOUT + WAIT / 4
    assert "(asyncio.to_thread, run_in_executor) 1 s after the loop stopped: 1;" in caplog.text


_TO_THREAD_SERVER = """
import asyncio, sys, threading, time
import netserve.aio as aio

class ToThread(aio.AsyncRequestHandler):
    async def handle(self):
        await self.readline()
        self.write(b"started\\n")  # sent before the call below is submitted, in this step
        await asyncio.to_thread(time.sleep, {sleep})

server = aio.AsyncServer(ToThread, [("127.0.0.1", 0)])

def stop_when_told():
    sys.stdin.readline()
    server.request_stop(graceful=False)

threading.Thread(target=stop_when_told, daemon=True).start()
server.serve({loop!r}, on_ready=lambda: print(server.addresses[0][1], flush=True))
"""


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_process_exits_after_a_stop_while_a_call_is_stuck_in_the_default_executor(
    loop_name: str,
) -> None:
    script = _TO_THREAD_SERVER.format(sleep=6 * WAIT, loop=loop_name)
    package_root = str(Path(aio.__file__).parents[2])  # the netserve under test
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": package_root},
        text=True,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], WAIT)[0], "the server did not start"
        port = int(proc.stdout.readline())  # printed once the server accepts
        with connect(("127.0.0.1", port)) as sock:
            assert ask(sock, b"go") == b"started\n"
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            # not the 60 s sleep: neither serve() nor the interpreter's exit waits for it
            assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def test_a_fast_stop_cuts_a_graceful_stop_short(loop: str) -> None:
    entered = threading.Event()

    class Forever(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            entered.set()
            await asyncio.sleep(WAIT)

    with serving(Forever, loop, drain_timeout=WAIT) as running, running.connect() as sock:
        sock.sendall(b"go\n")
        assert entered.wait(WAIT)  # the request is in flight
        assert wait_until(lambda: running.call(_waiting, running.server) == 0)
        running.server.request_stop()
        assert wait_until(lambda: running.server.stopping)
        start = time.monotonic()
        running.server.request_stop(graceful=False)
        running.thread.join(WAIT)
        assert time.monotonic() - start < WAIT / 2


def test_shutdown_from_the_loop_and_a_second_call_waits_for_the_first(loop: str) -> None:
    async def main() -> None:
        server = aio.AsyncServer(Reverse, ["127.0.0.1:0"])
        serving = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        address = server.addresses[0]
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"hi\n")
        assert await reader.readline() == b"ih\n"
        await asyncio.gather(server.shutdown(), server.shutdown(drain_timeout=0))
        assert await reader.read() == b""
        await serving
        assert server.connections == 0
        writer.close()

    aio.run(main(), loop)


def test_request_stop_before_start_stops_at_once(loop: str) -> None:
    server = aio.AsyncServer(Reverse, ["127.0.0.1:0"])
    server.request_stop()
    thread = threading.Thread(target=server.serve, args=(loop,))
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_cancelling_serve_forever_stops_the_server(loop: str) -> None:
    async def main() -> None:
        server = aio.AsyncServer(Reverse, ["127.0.0.1:0"])
        serving = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert await reader.read() == b""
        assert server.stopping
        writer.close()

    aio.run(main(), loop)


# --- heartbeat --------------------------------------------------------------------------------


def test_the_heartbeat_runs_periodically_and_its_errors_are_logged(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    beats: list[float] = []

    def heartbeat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("heartbeat hiccup")

    with serving(Reverse, loop, heartbeat=heartbeat, heartbeat_interval=0.02):
        assert wait_until(lambda: len(beats) >= 5)
    assert "the heartbeat callback failed: RuntimeError('heartbeat hiccup')" in caplog.text


# --- no leaks ---------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_file_descriptors_and_connections_stay_flat_after_1000_connections(
    loop: str, handler: type
) -> None:
    with serving(handler, loop) as running:
        with running.connect() as sock:  # warm up: the loop's own descriptors exist
            assert ask(sock, b"warm") == b"mraw\n"
        assert wait_until(lambda: running.server.connections == 0)
        before = _open_fds()
        for n in range(1000):
            with running.connect() as sock:
                if n % 3 == 0:
                    assert ask(sock, b"x%d" % n) == (b"x%d" % n)[::-1] + b"\n"
                elif n % 3 == 1:
                    sock.sendall(b"half a line")  # closes mid-line
                # else: connects and closes without a word
        assert wait_until(lambda: running.server.connections == 0)
        assert wait_until(lambda: _open_fds() <= before)
        tasks = running.call(lambda: len(asyncio.all_tasks()))
        assert tasks <= 2  # serve_forever and the periodic tick, no handler tasks left


# --- transports ---------------------------------------------------------------------------------


def test_auto_transport_is_epoll_where_the_platform_has_it() -> None:
    from netserve.aio._epoll import epoll_available

    server = aio.AsyncServer(Reverse, ["127.0.0.1:0"])
    assert server.transport == ("epoll" if epoll_available() else "loop")
    assert aio.AsyncServer(Reverse, ["127.0.0.1:0"], transport="loop").transport == "loop"


def test_unknown_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transport: expected one of auto, epoll, loop"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], transport="kqueue")


def test_epoll_where_the_platform_lacks_it_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("netserve.aio._server.epoll_available", lambda: False)
    with pytest.raises(ConfigError, match="epoll is not available"):
        aio.AsyncServer(Reverse, ["127.0.0.1:0"], transport="epoll")
    assert aio.AsyncServer(Reverse, ["127.0.0.1:0"]).transport == "loop"
