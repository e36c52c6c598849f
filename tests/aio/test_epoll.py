"""netserve's epoll transports, without a server: asyncio's transport contract over real
loopback sockets, on both loops."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import netserve.aio as aio
from netserve.aio._epoll import EpollHub, epoll_available

from .conftest import LOOPS, WAIT, ask, connect, recv_exactly, recv_until, serving, wait_until

pytestmark = pytest.mark.skipif(not epoll_available(), reason="epoll is Linux only")

Event = tuple[Any, ...]


@pytest.fixture(params=LOOPS)
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder(asyncio.Protocol):
    """Puts every callback on *events*; *on_data* decides what a read does."""

    def __init__(
        self,
        events: queue.Queue[Event],
        on_data: Callable[[Recorder, bytes], object] | None = None,
        keep_open_on_eof: bool = False,
    ) -> None:
        self.events = events
        self.on_data = on_data
        self.keep_open_on_eof = keep_open_on_eof
        self.hold_on_eof = False  # True: keep our side open, and do nothing
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.events.put(("made", transport.get_extra_info("peername"), self))

    def data_received(self, data: bytes) -> None:
        self.events.put(("data", data))
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self) -> bool:
        self.events.put(("eof",))
        if self.hold_on_eof:
            return True
        if self.keep_open_on_eof:
            self.transport.write(b"bye\n")
            self.transport.close()
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.put(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self) -> None:
        self.events.put(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.put(("lost", exc))


class Hub:
    """A hub with one listener on 127.0.0.1, served by a loop in a background thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: EpollHub, address: Any) -> None:
        self.loop = loop
        self.hub = hub
        self.address = address

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the loop and return its result."""

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(WAIT)


@contextmanager
def hub_serving(
    loop_name: str, factory: Callable[[], asyncio.Protocol], share: Any = None
) -> Iterator[Hub]:
    started: queue.Queue[Hub | BaseException] = queue.Queue()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = EpollHub(loop)
        sock = socket.create_server(("127.0.0.1", 0))
        listener = hub.listen(sock, factory, share)
        stop.append(asyncio.Event())
        started.put(Hub(loop, hub, sock.getsockname()))
        try:
            await stop[0].wait()
        finally:
            listener.close()
            hub.close()

    def target() -> None:
        try:
            aio.run(main(), loop_name)
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    running = started.get(timeout=WAIT)
    if isinstance(running, BaseException):
        raise running
    try:
        yield running
    finally:
        running.loop.call_soon_threadsafe(stop[0].set)
        thread.join(WAIT)
        assert not thread.is_alive()


def next_event(events: queue.Queue[Event], kind: str) -> Event:
    """The next event of *kind*, skipping others (bounded by WAIT)."""
    while True:
        event = events.get(timeout=WAIT)
        if event[0] == kind:
            return event


def small_send_buffer(protocol: Recorder) -> None:
    """Shrink the server side's send buffer, so that writes back up in the transport."""
    sock = protocol.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)


def echo(protocol: Recorder, data: bytes) -> None:
    protocol.transport.write(data)


def test_callbacks_come_in_order_with_the_peer_address(loop_name: str) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, echo)) as running:
        with connect(running.address) as client:
            client.sendall(b"hello\n")
            assert recv_until(client, b"\n") == b"hello\n"
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""  # eof_received returned False: the server closed
            peer = client.getsockname()
        kinds = []
        while not kinds or kinds[-1] != "lost":
            kinds.append(events.get(timeout=WAIT)[0])
    assert kinds == ["made", "data", "eof", "lost"]
    # made carried the peer's address, as accept() gave it
    with (
        hub_serving(loop_name, lambda: Recorder(events)) as running,
        connect(running.address) as client,
    ):
        assert next_event(events, "made")[1] == client.getsockname()
    assert peer[0] == "127.0.0.1"


def test_eof_received_true_keeps_our_side_open_for_a_reply(loop_name: str) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, keep_open_on_eof=True)) as running:
        with connect(running.address) as client:
            client.shutdown(socket.SHUT_WR)
            assert recv_until(client, b"\n") == b"bye\n"
            assert client.recv(1) == b""
        assert next_event(events, "lost")[1] is None


def test_write_eof_ends_our_side_and_reading_goes_on(loop_name: str) -> None:
    def reply_and_end(protocol: Recorder, data: bytes) -> None:
        if data == b"end\n":
            protocol.transport.write(b"ok\n")
            protocol.transport.write_eof()
            with pytest.raises(RuntimeError, match="write_eof"):
                protocol.transport.write(b"more")

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, reply_and_end)) as running,
        connect(running.address) as client,
    ):
        client.sendall(b"end\n")
        assert recv_until(client, b"\n") == b"ok\n"
        assert client.recv(1) == b""  # our side ended
        client.sendall(b"still reading\n")
        assert next_event(events, "data")[1] == b"end\n"
        assert next_event(events, "data")[1] == b"still reading\n"


def test_a_client_that_does_not_read_pauses_and_resumes_the_writer(loop_name: str) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    total = 64 * len(chunk)

    def flood(protocol: Recorder, data: bytes) -> None:
        small_send_buffer(protocol)
        for _ in range(64):
            protocol.transport.write(chunk)
        protocol.transport.close()  # sent in full before the socket closes

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, flood)) as running,
        connect(running.address, small_buffers=True) as client,
    ):
        client.sendall(b"go\n")
        paused = next_event(events, "pause")
        assert paused[1] > 64 * 1024  # over the default high-water mark
        received = recv_exactly(client, total)
        assert received == chunk * 64
        assert client.recv(1) == b""
        assert next_event(events, "resume")[1] <= 16 * 1024
        assert next_event(events, "lost")[1] is None


@pytest.mark.parametrize("ending", ["close", "write_eof"])
def test_what_resume_writing_writes_before_ending_is_sent_in_full(
    loop_name: str, ending: str
) -> None:
    chunk = bytes(range(256)) * 1024  # 256 KiB

    class LastWordOnResume(Recorder):
        """Writes past the high-water mark, then, in resume_writing, a last chunk and ends."""

        sent_last = False

        def resume_writing(self) -> None:
            super().resume_writing()
            if not self.sent_last:
                self.sent_last = True
                self.transport.write(chunk)
                getattr(self.transport, ending)()

    def flood(protocol: Recorder, data: bytes) -> None:
        small_send_buffer(protocol)
        # resume only when one send() empties the buffer: the path that ends the connection
        protocol.transport.set_write_buffer_limits(high=64 * 1024, low=0)
        for _ in range(4):
            protocol.transport.write(chunk)

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: LastWordOnResume(events, flood)) as running,
        connect(running.address, small_buffers=True) as client,
    ):
        client.sendall(b"go\n")
        assert next_event(events, "pause")[1] > 64 * 1024
        assert recv_exactly(client, 5 * len(chunk)) == chunk * 5
        assert client.recv(1) == b""
        if ending == "close":
            assert next_event(events, "lost")[1] is None


def test_lowering_the_high_water_mark_below_the_buffer_pauses_the_writer(
    loop_name: str,
) -> None:
    def fill(protocol: Recorder, data: bytes) -> None:
        small_send_buffer(protocol)
        protocol.transport.set_write_buffer_limits(high=1 << 20)
        while protocol.transport.get_write_buffer_size() < 64 * 1024:
            protocol.transport.write(b"x" * 16 * 1024)
        protocol.transport.set_write_buffer_limits(high=32 * 1024)

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, fill)) as running,
        connect(running.address, small_buffers=True) as client,
    ):
        client.sendall(b"go\n")
        assert next_event(events, "pause")[1] >= 64 * 1024


def test_the_protocol_stays_the_transports_until_connection_lost_returns(
    loop_name: str,
) -> None:
    class Asking(Recorder):
        def connection_lost(self, exc: Exception | None) -> None:
            self.events.put(("protocol in lost", self.transport.get_protocol() is self))
            super().connection_lost(exc)

    def abort(protocol: Recorder, data: bytes) -> None:
        protocol.transport.abort()
        protocol.events.put(("protocol after abort", protocol.transport.get_protocol()))

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Asking(events, abort)) as running,
        connect(running.address) as client,
    ):
        client.sendall(b"go\n")
        made = next_event(events, "made")
        assert next_event(events, "protocol after abort")[1] is made[2]
        assert next_event(events, "protocol in lost")[1] is True
        assert next_event(events, "lost")[1] is None
        assert wait_until(lambda: made[2].transport.get_protocol() is None)


def test_abort_drops_what_was_not_sent(loop_name: str) -> None:
    chunk = b"x" * (64 * 1024)

    def flood_then_abort(protocol: Recorder, data: bytes) -> None:
        small_send_buffer(protocol)
        for _ in range(64):
            protocol.transport.write(chunk)
        assert protocol.transport.get_write_buffer_size() > 0
        protocol.transport.abort()
        assert protocol.transport.is_closing()

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, flood_then_abort)) as running,
        connect(running.address, small_buffers=True) as client,
    ):
        client.sendall(b"go\n")
        assert next_event(events, "lost")[1] is None
        got = 0
        while True:
            try:
                data = client.recv(1 << 16)
            except ConnectionResetError:
                break
            if not data:
                break
            got += len(data)
        assert got < 64 * len(chunk)


def test_a_reset_reaches_connection_lost_as_a_connection_error(loop_name: str) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events)) as running:
        client = connect(running.address)
        next_event(events, "made")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        exc = next_event(events, "lost")[1]
        assert isinstance(exc, ConnectionError)


def test_a_reset_while_reading_is_paused_shows_when_reading_resumes(loop_name: str) -> None:
    def pause(protocol: Recorder, data: bytes) -> None:
        protocol.transport.pause_reading()
        assert not protocol.transport.is_reading()

    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, pause)) as running:
        client = connect(running.address)
        protocol = next_event(events, "made")[2]
        client.sendall(b"pause\n")
        next_event(events, "data")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        # as with asyncio's transports, a paused connection is not watched: resuming shows it
        running.call(protocol.transport.resume_reading)
        assert isinstance(next_event(events, "lost")[1], ConnectionError)


def test_both_sides_ended_the_connection_stays_until_closed(loop_name: str) -> None:
    def end_ours(protocol: Recorder, data: bytes) -> None:
        protocol.transport.write(b"bye\n")
        protocol.transport.write_eof()

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, end_ours)) as running,
        connect(running.address) as client,
        connect(running.address) as other,
    ):
        protocol = _protocol_of(client, _made(events, 2))
        protocol.hold_on_eof = True
        client.sendall(b"end\n")
        assert recv_until(client, b"\n") == b"bye\n"
        assert client.recv(1) == b""
        client.shutdown(socket.SHUT_WR)  # both sides ended: epoll reports a hang-up
        next_event(events, "eof")
        other.sendall(b"turn\n")  # a round trip elsewhere: the loop has turned since
        assert recv_until(other, b"\n") == b"bye\n"
        assert [e for e in _drain(events) if e[0] == "lost"] == []
        running.call(protocol.transport.close)
        assert next_event(events, "lost")[1] is None


def test_nothing_reaches_the_protocol_after_close(loop_name: str) -> None:
    chunk = b"x" * (64 * 1024)

    def flood_then_close(protocol: Recorder, data: bytes) -> None:
        if data.startswith(b"go"):
            small_send_buffer(protocol)
            for _ in range(32):
                protocol.transport.write(chunk)
            protocol.transport.close()  # the buffer is still full: the socket stays open

    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, flood_then_close)) as running:
        client = connect(running.address, small_buffers=True)
        client.sendall(b"go\n")
        assert next_event(events, "data")[1] == b"go\n"
        client.sendall(b"late request\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        seen = []
        while not seen or seen[-1][0] != "lost":
            seen.append(events.get(timeout=WAIT))
        assert [e for e in seen if e[0] in ("data", "eof")] == []


def test_paused_reading_holds_input_until_resumed(loop_name: str) -> None:
    def pause_on_first(protocol: Recorder, data: bytes) -> None:
        if data.startswith(b"first"):
            protocol.transport.pause_reading()
        else:
            protocol.transport.write(data)

    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, pause_on_first)) as running,
        connect(running.address) as paused,
        connect(running.address) as other,
    ):
        protocol = _protocol_of(paused, _made(events, 2))
        paused.sendall(b"first\n")
        assert next_event(events, "data")[1] == b"first\n"
        paused.sendall(b"second\n")
        # a round trip on another connection: the loop has turned since "second" came
        other.sendall(b"ping\n")
        assert recv_until(other, b"\n") == b"ping\n"
        assert [e for e in _drain(events) if e[0] == "data"] == [("data", b"ping\n")]
        running.call(protocol.transport.resume_reading)
        assert recv_until(paused, b"\n") == b"second\n"


def _made(events: queue.Queue[Event], count: int) -> list[Event]:
    """The "made" events already queued (at least *count*), leaving the others queued."""
    made: list[Event] = []
    others: list[Event] = []
    while len(made) < count:
        event = events.get(timeout=WAIT)
        (made if event[0] == "made" else others).append(event)
    for event in others:
        events.put(event)
    return made


def _protocol_of(client: socket.socket, made: list[Event]) -> Recorder:
    """The server side's protocol of *client*, among the "made" events."""
    return next(event[2] for event in made if event[1] == client.getsockname())  # type: ignore[no-any-return]


def _drain(events: queue.Queue[Event]) -> list[Event]:
    drained: list[Event] = []
    while True:
        try:
            drained.append(events.get_nowait())
        except queue.Empty:
            return drained


def test_a_failing_callback_closes_only_its_connection(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail_on_boom(protocol: Recorder, data: bytes) -> None:
        if data == b"boom\n":
            raise ValueError("boom")
        protocol.transport.write(data)

    events: queue.Queue[Event] = queue.Queue()
    caplog.set_level(logging.ERROR, logger="netserve")
    with (
        hub_serving(loop_name, lambda: Recorder(events, fail_on_boom)) as running,
        connect(running.address) as bad,
        connect(running.address) as good,
    ):
        bad.sendall(b"boom\n")
        assert bad.recv(1) == b""
        exc = next_event(events, "lost")[1]
        assert isinstance(exc, ValueError)
        good.sendall(b"fine\n")
        assert recv_until(good, b"\n") == b"fine\n"
    failures = [r for r in caplog.records if "data_received failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_descriptor_is_left_behind(loop_name: str) -> None:
    def close_on_q(protocol: Recorder, data: bytes) -> None:
        if data == b"q\n":
            protocol.transport.close()
        else:
            protocol.transport.write(data)

    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, close_on_q)) as running:
        before = _open_fds()
        for n in range(150):
            client = connect(running.address)
            client.sendall(b"hi\n")
            assert recv_until(client, b"\n") == b"hi\n"
            if n % 3 == 0:
                client.close()  # the client ends it
            elif n % 3 == 1:
                client.sendall(b"q\n")  # the server ends it
                assert client.recv(1) == b""
                client.close()
            else:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # a reset
        lost = 0
        while lost < 150:
            lost += next_event(events, "lost")[0] == "lost"
        assert _open_fds() == before


def test_write_buffer_limits_are_checked_and_kept(loop_name: str) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events)) as running, connect(running.address):
        transport = next_event(events, "made")[2].transport
        running.call(transport.set_write_buffer_limits, 1000)
        assert running.call(transport.get_write_buffer_limits) == (250, 1000)
        with pytest.raises(ValueError, match="must be >="):
            running.call(transport.set_write_buffer_limits, 10, 20)
        assert transport.get_extra_info("sockname") == running.address
        assert transport.get_extra_info("nothing", 42) == 42


def test_a_failing_protocol_factory_closes_that_connection_only(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    events: queue.Queue[Event] = queue.Queue()
    made = 0

    def factory() -> asyncio.Protocol:
        nonlocal made
        made += 1
        if made == 1:
            raise MemoryError("no room for a handler")
        return Recorder(events, echo)

    caplog.set_level(logging.ERROR, logger="netserve")
    with hub_serving(loop_name, factory) as running:
        with connect(running.address) as refused:
            assert refused.recv(1) == b""
        with connect(running.address) as served:
            served.sendall(b"ok\n")
            assert recv_until(served, b"\n") == b"ok\n"
    assert any("cannot serve the connection" in r.getMessage() for r in caplog.records)


class GateShare:
    """A load share that counts its questions and answers as told."""

    recheck_interval = 0.005

    def __init__(self) -> None:
        self.allow = threading.Event()
        self.asked = threading.Semaphore(0)
        self.open = 0

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def allows(self) -> bool:
        answer = self.allow.is_set()
        self.asked.release()  # after deciding: a test that saw the question knows the answer
        return answer

    def set_room(self, key: int, room: bool) -> None:
        """Not called here: no accept errors."""


def test_a_listener_accepts_only_while_its_share_allows(loop_name: str) -> None:
    share = GateShare()
    events: queue.Queue[Event] = queue.Queue()
    with (
        hub_serving(loop_name, lambda: Recorder(events, echo), share) as running,
        connect(running.address) as client,  # waits in the backlog
    ):
        for _ in range(3):  # asked, declined, asked again after the recheck interval
            assert share.asked.acquire(timeout=WAIT)
        assert events.empty()  # not accepted
        share.allow.set()
        next_event(events, "made")
        client.sendall(b"now\n")
        assert recv_until(client, b"\n") == b"now\n"


def test_closing_a_transport_after_its_loop_closed_raises_nothing(loop_name: str) -> None:
    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events)) as running:
        client = connect(running.address)
        transport = next_event(events, "made")[2].transport
    try:
        # the loop is closed now, with the connection still open (its owner went away)
        transport.abort()  # what a handler's finally does when its coroutine is collected
        assert transport.is_closing()
        assert events.empty()  # nobody to tell: connection_lost is not called
        assert client.recv(1) == b""  # the socket was closed all the same
    finally:
        client.close()


def test_an_event_for_an_fd_that_left_during_the_turn_is_not_delivered(loop_name: str) -> None:
    # connection A's callback closes B, and a new connection gets B's fd number in the same
    # turn: B's leftover event of that turn must not reach the new connection
    async def main() -> list[str]:
        hub = EpollHub(asyncio.get_running_loop())
        delivered: list[str] = []

        class Target:
            def __init__(self, name: str, action: Callable[[], object] = lambda: None) -> None:
                self.name = name
                self.action = action

            def on_events(self, events: int) -> None:
                delivered.append(self.name)
                self.action()

        def close_b_and_reuse_its_fd() -> None:
            hub.unregister(11)  # B leaves the set
            hub._watched[11] = Target("new connection on B's fd")

        hub._watched = {10: Target("A", close_b_and_reuse_its_fd), 11: Target("B")}  # type: ignore[dict-item]

        class Epoll:
            def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
                return [(10, 1), (11, 1)]

            def unregister(self, fd: int) -> None:
                pass

            def fileno(self) -> int:
                return real.fileno()

            def close(self) -> None:
                real.close()

        real = hub._epoll
        hub._epoll = Epoll()  # type: ignore[assignment]
        hub._on_ready()
        hub._watched.clear()
        hub.close()
        return delivered

    assert aio.run(main(), loop_name) == ["A"]


def test_a_listener_declined_by_its_share_resumes_when_a_connection_closes(
    loop_name: str,
) -> None:
    class Reverse(aio.LineHandler):
        def handle_line(self, line: bytes) -> bytes:
            return line[::-1]

    share = GateShare()
    share.recheck_interval = 3600.0  # only a closing connection can make it look again
    share.allow.set()
    with serving(Reverse, loop_name, share=share) as running:
        first = running.connect()
        assert ask(first, b"one") == b"eno\n"
        share.asked = threading.Semaphore(0)  # forget the questions asked so far
        share.allow.clear()
        with running.connect() as second:  # waits in the backlog: the share says no
            assert share.asked.acquire(timeout=WAIT)
            share.allow.set()
            first.close()  # one of this worker's connections is done: look again now
            assert ask(second, b"two") == b"owt\n"
        assert wait_until(lambda: share.open == 0)


def test_connections_have_nodelay_and_hand_out_a_non_blocking_socket(loop_name: str) -> None:
    def report(protocol: Recorder, data: bytes) -> None:
        sock = protocol.transport.get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        protocol.transport.write(b"%d %d\n" % (nodelay != 0, sock.getblocking()))

    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, report)) as running:
        for _ in range(3):  # the first connection, and those after it
            with connect(running.address) as client:
                client.sendall(b"?")
                assert recv_until(client, b"\n") == b"1 0\n"  # TCP_NODELAY, not blocking


def test_a_default_socket_timeout_never_makes_a_connection_wait(loop_name: str) -> None:
    # with a timeout, Python polls before each recv/send: the loop would wait on one client
    def report(protocol: Recorder, data: bytes) -> None:
        timeout = protocol.transport._sock.gettimeout()  # type: ignore[attr-defined]
        protocol.transport.write(b"%r\n" % timeout)

    events: queue.Queue[Event] = queue.Queue()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        with (
            hub_serving(loop_name, lambda: Recorder(events, report)) as running,
            connect(running.address) as client,
        ):
            client.sendall(b"?")
            assert recv_until(client, b"\n") in (b"0.0\n", b"None\n")
    finally:
        socket.setdefaulttimeout(previous)
    assert socket.getdefaulttimeout() == previous


def test_the_socket_of_a_closed_transport_is_still_handed_out(loop_name: str) -> None:
    handed: list[object] = []

    def close_then_ask(protocol: Recorder, data: bytes) -> None:
        protocol.transport.abort()
        handed.append(protocol.transport.get_extra_info("socket"))

    events: queue.Queue[Event] = queue.Queue()
    with hub_serving(loop_name, lambda: Recorder(events, close_then_ask)) as running:
        with connect(running.address) as client:
            client.sendall(b"?")
            assert client.recv(1) == b""
        next_event(events, "lost")
    assert isinstance(handed[0], socket.socket)
