"""Socket helpers shared by the server, compat and handler tests.

Plain functions, constants and markers only; the fixtures built on them live in conftest.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

import netserve

#: The loopback address the servers under test bind to.
HOST = "127.0.0.1"
#: The longest any single wait in these tests may take; a correct server needs milliseconds.
WAIT = 5.0

#: Skips a test on platforms without ``os.fork``.
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
#: Skips a test where descriptors cannot be counted in ``/proc/self/fd``.
needs_proc_fd = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd"
)


def open_fd_count() -> int:
    """How many file descriptors this process has open (needs ``needs_proc_fd``)."""
    return len(os.listdir("/proc/self/fd"))


def recv_until_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the peer sends until it closes; bounded in bytes and in time."""
    sock.settimeout(WAIT)
    deadline = time.monotonic() + WAIT
    chunks: list[bytes] = []
    received = 0
    while received <= limit and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        received += len(data)
    raise AssertionError(f"no EOF after {received} bytes")


def recv_line(sock: socket.socket, limit: int = 4096) -> bytes:
    """Bytes up to and including the first newline (read byte by byte: nothing is lost)."""
    line = bytearray()
    while len(line) < limit and not line.endswith(b"\n"):
        data = sock.recv(1)
        if not data:
            break
        line += data
    return bytes(line)


def request(address: Any, payload: bytes = b"ping\n", family: int = socket.AF_INET) -> bytes:
    """One request/response exchange: connect, send *payload*, read until EOF."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(address)
        client.sendall(payload)
        return recv_until_eof(client)


def wait_for(predicate: Any, timeout: float = WAIT) -> bool:
    """Poll *predicate* every 10 ms until it is true or *timeout* passes; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def start_serving(server: Any, poll_interval: float | None = 0.5) -> threading.Thread:
    """Run ``server.serve_forever(poll_interval)`` in a daemon thread and return the thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
    )
    thread.start()
    return thread


class UpperHandler(netserve.StreamRequestHandler):
    """Reads one line, answers it in upper case."""

    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class UpperDatagramHandler(netserve.DatagramRequestHandler):
    """Answers a datagram with its payload in upper case."""

    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())
