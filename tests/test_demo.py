"""The demo handlers over real servers on loopback sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import netserve
from netserve.demo import ReverseHandler, SeedHandler
from netserve.testing import run_server

pytestmark = pytest.mark.timeout(30)

IO_TIMEOUT = 5.0


def read_until_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (at most *limit* bytes)."""
    data = b""
    for _ in range(limit):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        if len(data) > limit:
            break
    pytest.fail(f"no EOF after {len(data)} bytes")


def read_until_eof_or_reset(sock: socket.socket) -> bytes:
    """What the server sent before it closed; a server that closes with unread data sends a
    reset after its reply, which ends the reading like EOF."""
    data = b""
    for _ in range(1 << 10):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    pytest.fail(f"no EOF after {len(data)} bytes")


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """Exactly *count* lines (the server must not close before)."""
    reader = sock.makefile("rb")
    try:
        lines = [reader.readline() for _ in range(count)]
    finally:
        reader.close()
    assert all(line.endswith(b"\n") for line in lines), lines
    return lines


@pytest.fixture(params=["TCPServer", "ThreadingTCPServer"])
def reverse_address(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    server_class = getattr(netserve, request.param)
    with run_server(server_class(("127.0.0.1", 0), ReverseHandler), poll_interval=0.05) as addr:
        yield addr


def test_reverse_one_line(reverse_address: tuple[str, int]) -> None:
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"hello\n")
        assert read_lines(sock, 1) == [b"olleh\n"]


def test_reverse_many_lines_one_at_a_time(reverse_address: tuple[str, int]) -> None:
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        reader = sock.makefile("rb")
        for i in range(50):
            line = f"line {i} of fifty".encode()
            sock.sendall(line + b"\n")
            assert reader.readline() == line[::-1] + b"\n"
        reader.close()


def test_reverse_many_lines_sent_at_once(reverse_address: tuple[str, int]) -> None:
    lines = [f"{i}: {'x' * (i % 37)}abc".encode() for i in range(500)]
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"".join(line + b"\n" for line in lines))
        sock.shutdown(socket.SHUT_WR)
        replies = read_until_eof(sock)
    assert replies == b"".join(line[::-1] + b"\n" for line in lines)


def test_reverse_empty_line_and_bytes(reverse_address: tuple[str, int]) -> None:
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"\n\x00\xff\x01\nab\r\n")
        assert read_lines(sock, 3) == [b"\n", b"\x01\xff\x00\n", b"\rba\n"]


def test_reverse_long_line(reverse_address: tuple[str, int]) -> None:
    line = bytes(range(256)).replace(b"\n", b"") * 400  # ~100 kB in one line
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(line + b"\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == line[::-1] + b"\n"


def test_reverse_partial_last_line_is_not_answered(reverse_address: tuple[str, int]) -> None:
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"abc\ndef")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b"cba\n"


def test_reverse_eof_closes_the_connection(reverse_address: tuple[str, int]) -> None:
    with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""


def test_reverse_serves_the_next_client_after_eof(reverse_address: tuple[str, int]) -> None:
    for word in (b"first", b"second", b"third"):
        with socket.create_connection(reverse_address, timeout=IO_TIMEOUT) as sock:
            sock.sendall(word + b"\n")
            sock.shutdown(socket.SHUT_WR)
            assert read_until_eof(sock) == word[::-1] + b"\n"


# --- SeedHandler ---------------------------------------------------------------------------


@pytest.fixture
def seed_address() -> Iterator[tuple[str, int]]:
    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), SeedHandler)
    with run_server(server, poll_interval=0.05) as address:
        yield address


@pytest.mark.parametrize(
    ("sent", "reply"),
    [
        (b"hello", b"olleh"),
        (b"hello\n", b"olleh\n"),
        (b"hello\r\n", b"olleh\r\n"),
        (b"a b c\n", b"c b a\n"),
        (b"\n", b"\n"),
    ],
)
def test_seed_reverses_and_closes(seed_address: tuple[str, int], sent: bytes, reply: bytes) -> None:
    with socket.create_connection(seed_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(sent)
        assert read_until_eof(sock) == reply


def test_seed_reads_once(seed_address: tuple[str, int]) -> None:
    data = bytes(b"0123456789abcdef"[i % 16] for i in range(3000))
    with socket.create_connection(seed_address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(data)
        reply = read_until_eof_or_reset(sock)
    # one recv(1024): at most 1024 bytes come back, the head of what was sent, reversed
    assert 0 < len(reply) <= 1024
    assert reply == data[: len(reply)][::-1]


def test_seed_with_handle_request() -> None:
    """The classic use: a plain TCPServer, one handle_request() per client."""
    with (
        netserve.TCPServer(("127.0.0.1", 0), SeedHandler) as server,
        socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as sock,
    ):
        sock.sendall(b"classic\n")
        server.handle_request()
        assert read_until_eof(sock) == b"cissalc\n"
