"""Helpers for the event-loop server tests: a server run in a background thread on either
loop, and blocking loopback clients."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from netserve.aio import AsyncServer
from netserve.aio import _server as aio_server

#: How long a client waits for a reply, and helpers wait for a condition: generous, since the
#: machine may be busy; a passing test never waits this long.
WAIT = 10.0
LOOPS = ["asyncio", "uvloop"]
#: Each test runs on both loops with netserve's epoll transports (what "auto" picks on
#: Linux), and on both with the loop's own transports (what it picks elsewhere).
LOOPS_AND_TRANSPORTS = [*LOOPS, *(f"{loop}/loop-transports" for loop in LOOPS)]

_T = TypeVar("_T")


@pytest.fixture(params=LOOPS_AND_TRANSPORTS)
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The event loop to serve on, by name; with ``/loop-transports``, servers made in the
    test with ``transport="auto"`` choose the loop's transports instead of epoll."""
    name, _, transports = str(request.param).partition("/")
    if transports:
        choose = aio_server._transport_kind
        monkeypatch.setattr(
            aio_server, "_transport_kind", lambda c: "loop" if c == "auto" else choose(c)
        )
    return name


class Running:
    """A server serving in a background thread, and ways to reach into its loop."""

    def __init__(self, server: AsyncServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def address(self) -> Any:
        return self.server.addresses[0]

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the server's loop and return its result."""

        async def call() -> _T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.server._ns_loop).result(WAIT)

    def connect(self, source: str | None = None, small_buffers: bool = False) -> socket.socket:
        return connect(self.address, source, small_buffers)


@contextmanager
def serving(handler: type, loop: str, **options: Any) -> Iterator[Running]:
    """Serve *handler* on 127.0.0.1, port 0, in a thread; stop it fast on exit and check
    that the serving thread ended and raised nothing."""
    options.setdefault("drain_timeout", 1.0)
    server = AsyncServer(handler, [("127.0.0.1", 0)], **options)
    ready = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.serve(loop, on_ready=ready.set)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, name="aio test server", daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the server did not start"
    if errors:
        raise errors[0]
    try:
        yield Running(server, thread)
    finally:
        server.request_stop(graceful=False)
        thread.join(WAIT)
        assert not thread.is_alive(), "the server did not stop"
        if errors:
            raise errors[0]


def connect(address: Any, source: str | None = None, small_buffers: bool = False) -> socket.socket:
    """A client socket; with *small_buffers*, kernel buffers of 64 KiB, so that a client that
    does not read backs the server up sooner (autotuning allows 32 MiB here)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    if small_buffers:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    if source:
        sock.bind((source, 0))
    sock.connect(address)
    return sock


def recv_until(sock: socket.socket, end: bytes, limit: int = 1 << 20) -> bytes:
    """Read until the data ends with *end*, the peer closes, or *limit* bytes."""
    data = b""
    while not data.endswith(end) and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    return recv_until(sock, b"\n")


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed its side (EOF or reset) within WAIT; data is skipped."""
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    """Poll *predicate* (bounded by *timeout*) for conditions with no event to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    """Client sockets to close after the test, whatever happens."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()
