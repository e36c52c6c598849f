"""LineHandler and LengthPrefixedHandler over real loopback sockets, inline and blocking, on
both loops."""

from __future__ import annotations

import array
import logging
import resource
import socket
import struct
import threading
import time

import pytest

import netserve.aio as aio
from netserve import ConfigError
from netserve.aio._connection import PAUSE_INPUT

from .conftest import (
    WAIT,
    ask,
    closed_by_server,
    recv_exactly,
    recv_until,
    serving,
    wait_until,
)


class Reverse(aio.LineHandler):
    __slots__ = ()

    def handle_line(self, line: bytes) -> bytes | None:
        if line == b"silent":
            return None
        if line == b"boom":
            raise ValueError("boom in handle_line")
        if line == b"quit":
            self.close()
            return b"bye"
        return line[::-1]


class BlockingReverse(Reverse):
    __slots__ = ()
    blocking = True


@pytest.fixture(params=[False, True], ids=["inline", "blocking"])
def reverse(request: pytest.FixtureRequest) -> type[aio.LineHandler]:
    return BlockingReverse if request.param else Reverse


def frame(payload: bytes, header: int = 4) -> bytes:
    return payload.__len__().to_bytes(header, "big") + payload


def read_frame(sock: socket.socket, header: int = 4) -> bytes:
    size = int.from_bytes(recv_exactly(sock, header), "big")
    return recv_exactly(sock, size)


# --- lines ------------------------------------------------------------------------------------


def test_replies_to_each_line(loop: str, reverse: type[aio.LineHandler]) -> None:
    with serving(reverse, loop) as running, running.connect() as sock:
        assert ask(sock, b"hello") == b"olleh\n"
        assert ask(sock, b"") == b"\n"  # an empty reply is a bare delimiter
        sock.sendall(b"silent\n")  # None: no reply at all
        assert ask(sock, b"abc") == b"cba\n"
        assert ask(sock, b"x" * 10000) == b"x" * 10000 + b"\n"


def test_a_line_in_pieces_and_many_lines_in_one_read(
    loop: str, reverse: type[aio.LineHandler]
) -> None:
    with serving(reverse, loop) as running, running.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (b"ab", b"c", b"d\nef", b"g\n"):
            sock.sendall(piece)
            time.sleep(0.01)  # separate reads, so the line really arrives in pieces
        assert recv_until(sock, b"gfe\n") == b"dcba\ngfe\n"


def test_pipelined_requests_are_answered_in_order(
    loop: str, reverse: type[aio.LineHandler]
) -> None:
    lines = [b"%d-%s" % (n, b"y" * (n % 50)) for n in range(3000)]
    expected = b"".join(line[::-1] + b"\n" for line in lines)
    with serving(reverse, loop) as running, running.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(b"%s\n" % x for x in lines),))
        sender.start()
        assert recv_exactly(sock, len(expected)) == expected
        sender.join(WAIT)


def test_state_lives_on_the_handler_instance(loop: str) -> None:
    class Counter(aio.LineHandler):
        def setup(self) -> None:
            self.count = 0

        def handle_line(self, line: bytes) -> bytes:
            self.count += 1
            return b"%s %d" % (line, self.count)

    with serving(Counter, loop) as running, running.connect() as one, running.connect() as two:
        assert ask(one, b"a") == b"a 1\n"
        assert ask(one, b"b") == b"b 2\n"
        assert ask(two, b"c") == b"c 1\n"
        assert ask(one, b"d") == b"d 3\n"


def test_close_from_the_handler_sends_the_reply_first(
    loop: str, reverse: type[aio.LineHandler]
) -> None:
    with serving(reverse, loop) as running, running.connect() as sock:
        sock.sendall(b"abc\nquit\nnot handled\n")
        assert recv_until(sock, b"bye\n") == b"cba\nbye\n"
        assert closed_by_server(sock)
        assert wait_until(lambda: running.server.connections == 0)


def test_crlf_delimiter(loop: str) -> None:
    class Crlf(aio.LineHandler):
        delimiter = b"\r\n"

        def handle_line(self, line: bytes) -> bytes:
            return line.upper()

    with serving(Crlf, loop) as running, running.connect() as sock:
        sock.sendall(b"one\r\ntw\no\r\n")
        assert recv_until(sock, b"O\r\n") == b"ONE\r\nTW\nO\r\n"


def test_setup_and_finish_run_once_per_connection(
    loop: str, reverse: type[aio.LineHandler]
) -> None:
    events: list[tuple[str, object]] = []
    done = threading.Event()

    class Hooks(reverse):  # type: ignore[valid-type, misc]
        def setup(self) -> None:
            events.append(("setup", self.client_address))

        def finish(self) -> None:
            events.append(("finish", self.client_address))
            done.set()

    with serving(Hooks, loop) as running:
        with running.connect() as sock:
            assert ask(sock, b"hi") == b"ih\n"
            address = sock.getsockname()
        assert done.wait(WAIT)
        assert events == [("setup", address), ("finish", address)]
        assert wait_until(lambda: running.server.connections == 0)


def test_blocking_handlers_run_off_the_loop_thread(loop: str) -> None:
    threads: dict[str, threading.Thread] = {}
    finished = threading.Event()

    class WhereAmI(aio.LineHandler):
        blocking = True

        def setup(self) -> None:
            threads["setup"] = threading.current_thread()

        def handle_line(self, line: bytes) -> bytes:
            threads["handle_line"] = threading.current_thread()
            time.sleep(0.05)  # blocking is fine here
            return line

        def finish(self) -> None:
            threads["finish"] = threading.current_thread()
            finished.set()

    with serving(WhereAmI, loop, threads=2) as running:
        loop_thread = running.call(threading.current_thread)
        with running.connect() as sock:
            assert ask(sock, b"x") == b"x\n"
        assert finished.wait(WAIT)
    assert loop_thread is running.thread
    for where, thread in threads.items():
        assert thread is not loop_thread, where
        assert thread.name.startswith("netserve-aio-"), where


def test_inline_handlers_run_on_the_loop_thread(loop: str) -> None:
    seen: list[threading.Thread] = []

    class Inline(aio.LineHandler):
        def handle_line(self, line: bytes) -> bytes:
            seen.append(threading.current_thread())
            return line

    with serving(Inline, loop) as running, running.connect() as sock:
        assert ask(sock, b"x") == b"x\n"
        assert seen == [running.thread]


def test_2000_connections_are_served_by_8_threads(loop: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4500  # 2000 clients and 2000 server sides in this process, and some spare
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    used: set[int] = set()
    lock = threading.Lock()

    class Slow(aio.LineHandler):
        __slots__ = ()
        blocking = True

        def handle_line(self, line: bytes) -> bytes:
            with lock:
                used.add(threading.get_ident())
            time.sleep(0.001)
            return line[::-1]

    before = threading.active_count()
    socks: list[socket.socket] = []
    try:
        with serving(Slow, loop, threads=8) as running:
            assert threading.active_count() == before + 1 + 8  # the serving thread and 8
            for n in range(2000):
                sock = running.connect()
                socks.append(sock)
                sock.sendall(b"line %d\n" % n)
            assert running.server.connections == 2000 or wait_until(
                lambda: running.server.connections == 2000
            )
            for n, sock in enumerate(socks):
                assert recv_until(sock, b"\n") == (b"line %d" % n)[::-1] + b"\n"
            assert threading.active_count() == before + 1 + 8
            assert len(used) <= 8
    finally:
        for sock in socks:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert wait_until(lambda: threading.active_count() == before)


# --- errors -----------------------------------------------------------------------------------


def test_a_line_too_long_gets_the_error_reply_then_a_close(
    loop: str, reverse: type[aio.LineHandler], caplog: pytest.LogCaptureFixture
) -> None:
    class Short(reverse):  # type: ignore[valid-type, misc]
        max_line = 100

    caplog.set_level(logging.WARNING, logger="netserve")
    with serving(Short, loop) as running, running.connect() as sock:
        assert ask(sock, b"x" * 100) == b"x" * 100 + b"\n"  # exactly max_line: fine
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        # the lines before the bad one are answered first, in order
        sock.sendall(b"ab\ncd\n" + b"z" * 5000)
        assert recv_until(sock, b"long\n") == b"ba\ndc\nerror: line too long\n"
        assert closed_by_server(sock)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(client in m and "longer than max_line (100 bytes)" in m for m in messages)


def test_the_error_reply_reaches_a_client_that_keeps_sending(loop: str) -> None:
    class Short(aio.LineHandler):
        max_line = 10

    with serving(Short, loop) as running, running.connect() as sock:
        sender = threading.Thread(target=_send_for_a_while, args=(sock, b"q" * 65536, 0.3))
        sender.start()
        # the server discards what keeps coming (no reset), so the reply is not lost
        assert recv_until(sock, b"\n") == b"error: line too long\n"
        sender.join(WAIT)
        assert closed_by_server(sock)


def _send_for_a_while(sock: socket.socket, chunk: bytes, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(chunk)
    except OSError:
        pass


def test_no_error_reply_when_it_is_empty(loop: str) -> None:
    class Quiet(aio.LineHandler):
        max_line = 10
        error_reply = b""

    with serving(Quiet, loop) as running, running.connect() as sock:
        sock.sendall(b"y" * 50)
        assert recv_until(sock, b"\n") == b""  # closed without a word


def test_a_handler_error_closes_that_connection_only_and_is_logged(
    loop: str, reverse: type[aio.LineHandler], caplog: pytest.LogCaptureFixture
) -> None:
    with (
        serving(reverse, loop) as running,
        running.connect() as other,
        running.connect() as sock,
    ):
        assert ask(other, b"before") == b"erofeb\n"
        sock.sendall(b"ok\nboom\nnever\n")
        assert recv_until(sock, b"\n") == b"ko\n"  # the reply before the error is sent
        assert closed_by_server(sock)
        assert ask(other, b"after") == b"retfa\n"
        with running.connect() as third:
            assert ask(third, b"new") == b"wen\n"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "handle_line failed for 127.0.0.1:" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "ValueError: boom in handle_line" in caplog.text


class Exits(aio.LineHandler):
    """A blocking handler that raises what ``except Exception`` does not catch: in
    ``handle_line`` for the line ``exit``, and in the method named by ``exit_in``."""

    blocking = True
    exit_in = ""

    def setup(self) -> None:
        if self.exit_in == "setup":
            raise SystemExit("exit in setup")

    def handle_line(self, line: bytes) -> bytes:
        if line == b"exit":
            raise SystemExit("exit in handle_line")
        return line

    def finish(self) -> None:
        if self.exit_in == "finish":
            raise SystemExit("exit in finish")


@pytest.mark.parametrize("where", ["setup", "handle_line", "finish"])
def test_a_blocking_handler_raising_systemexit_closes_its_connection_and_counts_it_out(
    loop: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = type("Exits", (Exits,), {"exit_in": where})
    with serving(handler, loop, threads=1) as running:
        with running.connect() as sock:
            if where != "setup":
                assert ask(sock, b"hi") == b"hi\n"
                sock.sendall(b"exit\n")
            assert closed_by_server(sock)  # before: left open, busy for ever
        # before: counted for ever (a max_connections slot, a descriptor)
        assert wait_until(lambda: running.server.connections == 0)
        handler.exit_in = ""
        with running.connect() as other:  # the pool's only thread goes on serving
            assert ask(other, b"next") == b"next\n"
    assert f"exit in {where}" in caplog.text


def test_a_setup_error_closes_and_skips_finish(
    loop: str, reverse: type[aio.LineHandler], caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[bool] = []

    class BadSetup(reverse):  # type: ignore[valid-type, misc]
        def setup(self) -> None:
            raise RuntimeError("no setup today")

        def finish(self) -> None:
            finished.append(True)

    with serving(BadSetup, loop) as running, running.connect() as sock:
        assert closed_by_server(sock)
        assert wait_until(lambda: running.server.connections == 0)
    assert "setup failed" in caplog.text
    assert "RuntimeError: no setup today" in caplog.text
    assert not finished


def test_a_client_that_closes_mid_line_is_logged_at_debug_and_cleaned_up(
    loop: str, reverse: type[aio.LineHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    with serving(reverse, loop) as running:
        with running.connect() as sock:
            assert ask(sock, b"one") == b"eno\n"
            sock.sendall(b"half a li")
            assert wait_until(lambda: running.call(_partial_lines, running.server) == 1)
            sock.shutdown(socket.SHUT_WR)
            assert closed_by_server(sock)
        assert wait_until(lambda: running.server.connections == 0)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("closed mid-message" in m and "9 bytes" in m for m in debug)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _partial_lines(server: aio.AsyncServer) -> int:
    return sum(1 for c in server._connections.values() if getattr(c, "_ns_framer", None))


def test_bad_class_attributes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="delimiter"):
        type("Bad", (aio.LineHandler,), {"delimiter": b""})
    with pytest.raises(ConfigError, match="max_line"):
        type("Bad", (aio.LineHandler,), {"max_line": 0})
    with pytest.raises(ConfigError, match="blocking"):
        type("Bad", (aio.LineHandler,), {"blocking": "yes"})
    with pytest.raises(ConfigError, match="header"):
        type("Bad", (aio.LengthPrefixedHandler,), {"header": 3})


# --- backpressure and bounded queues ----------------------------------------------------------


def test_a_client_that_does_not_read_cannot_make_the_server_buffer_without_bound(
    loop: str, reverse: type[aio.LineHandler]
) -> None:
    line = b"r" * 1023 + b"\n"
    total = 16 * 1024 * 1024  # more than the kernel buffers hold
    with serving(reverse, loop) as running, running.connect(small_buffers=True) as sock:
        sender = threading.Thread(target=sock.sendall, args=(line * (total // len(line)),))
        sender.start()
        # the client reads nothing: the server's writes back up and it stops reading
        assert wait_until(lambda: running.call(_write_paused, running.server))
        peaks = []
        for _ in range(20):
            peaks.append(running.call(_buffered, running.server))
            time.sleep(0.01)
        # what the server holds: the high-water mark plus one read's worth of replies
        assert max(peaks) <= aio.WRITE_HIGH_WATER + 512 * 1024, peaks
        # and nothing is lost: reading resumes once the client reads
        received = recv_exactly(sock, total // len(line) * len(line))
        assert received == line * (total // len(line))
        sender.join(WAIT)


class Amplify(aio.LineHandler):
    """Small requests, large replies: what a client that does not read asks for to make
    the server hold the most."""

    __slots__ = ()

    def handle_line(self, line: bytes) -> bytes:
        return line * 400  # 2001 bytes for a request of 6


class BlockingAmplify(Amplify):
    __slots__ = ()
    blocking = True


@pytest.mark.parametrize("handler", [Amplify, BlockingAmplify], ids=["inline", "blocking"])
def test_large_replies_to_pipelined_requests_do_not_pile_up_for_a_client_that_does_not_read(
    loop: str, handler: type[aio.LineHandler]
) -> None:
    count = 30000  # 180 KB of requests: one read takes thousands (64 KiB to 256 KiB)
    requests = b"".join(b"%05d\n" % n for n in range(count))
    with (
        serving(handler, loop, threads=2) as running,
        running.connect(small_buffers=True) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        # the client reads nothing: once the server's writes back up and its handlers are
        # idle, what it holds stays as it is
        assert wait_until(lambda: running.call(_write_paused_and_idle, running.server))
        held = running.call(_write_buffered, running.server)
        # the high-water mark, and at most as much again from the replies of one batch
        # (before, every message of a read was handled: tens of MB for this client)
        assert held <= 2 * aio.WRITE_HIGH_WATER + 2001, held
        # the requests not handled yet wait: at most one read's worth (256 KiB)
        assert running.call(_queued_bytes, running.server) <= 256 * 1024
        # nothing is lost, and the order is kept, as the client reads
        for n in range(count):
            assert recv_exactly(sock, 2001) == b"%05d" % n * 400 + b"\n", n
        sender.join(WAIT)


def _write_buffered(server: aio.AsyncServer) -> int:
    return sum(c._ns_transport.get_write_buffer_size() for c in server._connections.values())


def _write_paused_and_idle(server: aio.AsyncServer) -> bool:
    return _write_paused(server) and not any(
        getattr(c, "_ns_busy", False) for c in server._connections.values()
    )


def _write_paused(server: aio.AsyncServer) -> bool:
    return any(c._ns_paused & 1 for c in server._connections.values())


def _buffered(server: aio.AsyncServer) -> int:
    """Bytes the server holds for its clients: transports' write buffers and queued input."""
    total = 0
    for connection in server._connections.values():
        total += connection._ns_transport.get_write_buffer_size()
        pending = getattr(connection, "_ns_pending", None)
        total += sum(map(len, pending or ()))
    return total


def test_a_slow_blocking_handler_bounds_its_queue_and_pauses_reading(loop: str) -> None:
    gate = threading.Event()
    entered = threading.Event()

    class Gated(aio.LineHandler):
        blocking = True

        def handle_line(self, line: bytes) -> bytes:
            entered.set()
            gate.wait(WAIT)
            return line

    lines = [b"%d" % n for n in range(200000)]
    data = b"".join(line + b"\n" for line in lines)
    with serving(Gated, loop, threads=1) as running, running.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        # the only thread is held in the first message: nothing takes from the queue now
        # (before, setup's job ending could hand the first queue to it and resume reading)
        assert entered.wait(WAIT)
        # paused with messages queued behind the gated one
        assert wait_until(lambda: running.call(_paused_with_queue, running.server))
        queued = running.call(_queued, running.server)
        # the queue bound, plus what one read (up to 256 KiB) can hold of these lines
        assert aio.MAX_QUEUED_MESSAGES <= queued <= aio.MAX_QUEUED_MESSAGES + 256 * 1024 // 2
        gate.set()
        expected = data
        assert recv_exactly(sock, len(expected)) == expected
        sender.join(WAIT)


def test_a_slow_blocking_handler_bounds_the_bytes_it_queues(loop: str) -> None:
    gate = threading.Event()
    entered = threading.Event()

    class GatedFrames(aio.LengthPrefixedHandler):
        blocking = True

        def handle_frame(self, payload: bytes) -> bytes:
            entered.set()
            gate.wait(WAIT)
            return payload[:4]  # the frame's number

    count, size = 32, 128 * 1024  # 4 MiB in far fewer frames than MAX_QUEUED_MESSAGES
    frames = [frame(b"%04d" % n + bytes(size - 4)) for n in range(count)]
    with (
        serving(GatedFrames, loop, threads=1) as running,
        running.connect(small_buffers=True) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(b"".join(frames),))
        sender.start()
        assert entered.wait(WAIT)  # the only thread is held: nothing takes from the queue
        assert wait_until(
            lambda: (
                running.call(_paused_with_queue, running.server)
                or running.call(_queued, running.server) == count - 1
            )  # all read: no pause
        )
        # the byte bound, plus what one read can add (256 KiB) and the frame it completed
        assert running.call(_queued_bytes, running.server) <= aio.MAX_QUEUED_BYTES + 384 * 1024
        gate.set()
        # reading resumes each time the queue is taken: every reply comes, in order
        assert [read_frame(sock) for _ in range(count)] == [b"%04d" % n for n in range(count)]
        sender.join(WAIT)


def _queued_bytes(server: aio.AsyncServer) -> int:
    return sum(
        sum(map(len, getattr(c, "_ns_pending", None) or ())) for c in server._connections.values()
    )


def _input_paused(server: aio.AsyncServer) -> bool:
    return any(c._ns_paused & PAUSE_INPUT for c in server._connections.values())


def _paused_with_queue(server: aio.AsyncServer) -> bool:
    return _input_paused(server) and _queued(server) > 0


def _queued(server: aio.AsyncServer) -> int:
    return sum(len(getattr(c, "_ns_pending", None) or ()) for c in server._connections.values())


# --- length-prefixed frames -------------------------------------------------------------------


class FrameReverse(aio.LengthPrefixedHandler):
    __slots__ = ()

    def handle_frame(self, frame: bytes) -> bytes | None:
        if frame == b"boom":
            raise ValueError("boom in handle_frame")
        return frame[::-1]


class BlockingFrameReverse(FrameReverse):
    __slots__ = ()
    blocking = True


@pytest.fixture(params=[False, True], ids=["inline", "blocking"])
def frame_reverse(request: pytest.FixtureRequest) -> type[aio.LengthPrefixedHandler]:
    return BlockingFrameReverse if request.param else FrameReverse


@pytest.mark.parametrize("header", [1, 2, 4, 8])
def test_frames_get_framed_replies(
    loop: str, frame_reverse: type[aio.LengthPrefixedHandler], header: int
) -> None:
    class Sized(frame_reverse):  # type: ignore[valid-type, misc]
        pass

    Sized.header = header
    with serving(Sized, loop) as running, running.connect() as sock:
        sock.sendall(frame(b"hello", header))
        assert read_frame(sock, header) == b"olleh"
        sock.sendall(frame(b"", header))  # zero-length frames are valid
        assert read_frame(sock, header) == b""
        # several frames in one send, one frame in pieces
        sock.sendall(frame(b"ab", header) + frame(b"cd", header))
        assert read_frame(sock, header) == b"ba"
        assert read_frame(sock, header) == b"dc"
        data = frame(b"x" * 200 + b"y", header)
        for at in range(0, len(data), 37):
            sock.sendall(data[at : at + 37])
        assert read_frame(sock, header) == b"y" + b"x" * 200


def test_an_oversized_frame_closes_with_a_warning(
    loop: str, frame_reverse: type[aio.LengthPrefixedHandler], caplog: pytest.LogCaptureFixture
) -> None:
    class Small(frame_reverse):  # type: ignore[valid-type, misc]
        max_frame = 100

    with serving(Small, loop) as running, running.connect() as sock:
        sock.sendall(frame(b"a" * 100))
        assert read_frame(sock) == b"a" * 100
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(frame(b"ok") + struct.pack(">I", 101) + b"b" * 50)
        assert read_frame(sock) == b"ko"  # the frame before it is answered
        assert closed_by_server(sock)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(client in m and "frame of 101 bytes is longer than max_frame" in m for m in warnings)


def test_a_frame_handler_error_closes_that_connection_only(
    loop: str, frame_reverse: type[aio.LengthPrefixedHandler], caplog: pytest.LogCaptureFixture
) -> None:
    with (
        serving(frame_reverse, loop) as running,
        running.connect() as other,
        running.connect() as sock,
    ):
        sock.sendall(frame(b"boom"))
        assert closed_by_server(sock)
        other.sendall(frame(b"fine"))
        assert read_frame(other) == b"enif"
    assert "handle_frame failed" in caplog.text
    assert "ValueError: boom in handle_frame" in caplog.text


def test_a_reply_too_long_for_the_header_is_a_handler_error(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Big(aio.LengthPrefixedHandler):
        header = 1

        def handle_frame(self, frame: bytes) -> bytes:
            return frame * 300

    with serving(Big, loop) as running, running.connect() as sock:
        sock.sendall(frame(b"x", 1))
        assert read_frame(sock, 1) == b"x" * 255 or closed_by_server(sock)
    assert "too long for a 1-byte length header" in caplog.text


class Words(aio.LengthPrefixedHandler):
    """Replies that are bytes-like but not bytes, of items wider than a byte."""

    def handle_frame(self, frame: bytes) -> bytes:
        if frame == b"array":
            return array.array("I", [1, 2, 3])  # type: ignore[return-value]
        return memoryview(frame).cast("H")  # type: ignore[return-value]


class BlockingWords(Words):
    blocking = True


@pytest.mark.parametrize("handler", [Words, BlockingWords], ids=["inline", "blocking"])
def test_a_reply_of_wide_items_is_framed_with_its_length_in_bytes(
    loop: str, handler: type[aio.LengthPrefixedHandler]
) -> None:
    with serving(handler, loop) as running, running.connect() as sock:
        sock.sendall(frame(b"array") + frame(b"wxyz"))
        # before, the headers said 3 and 2 (items, not bytes): the client lost the framing
        assert read_frame(sock) == array.array("I", [1, 2, 3]).tobytes()
        assert read_frame(sock) == b"wxyz"


def test_a_client_closing_mid_frame_is_logged_at_debug(
    loop: str, frame_reverse: type[aio.LengthPrefixedHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")
    with serving(frame_reverse, loop) as running:
        with running.connect() as sock:
            sock.sendall(struct.pack(">I", 10) + b"abc")
            assert wait_until(lambda: running.call(_partial_lines, running.server) == 1)
        assert wait_until(lambda: running.server.connections == 0)
    assert "mid-message" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
