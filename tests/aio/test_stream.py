"""AsyncRequestHandler over real loopback sockets, on both loops: the read/write API, asyncio
APIs inside handle(), errors, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import sys
import threading
import time

import pytest

import netserve.aio as aio
from netserve.proto import FrameTooLargeError

from .conftest import (
    WAIT,
    ask,
    closed_by_server,
    recv_exactly,
    recv_until,
    serving,
    wait_until,
)


class Reverse(aio.AsyncRequestHandler):
    __slots__ = ()

    async def handle(self) -> None:
        while line := await self.readline():
            self.write(line.rstrip(b"\n")[::-1] + b"\n")


def test_readline_and_write(loop: str) -> None:
    with serving(Reverse, loop) as running, running.connect() as sock:
        assert ask(sock, b"hello") == b"olleh\n"
        sock.sendall(b"a\nbc\n")  # two lines in one read
        assert recv_until(sock, b"cb\n") == b"a\ncb\n"
        for piece in (b"de", b"f", b"\n"):  # one line in pieces
            sock.sendall(piece)
            time.sleep(0.01)
        assert recv_until(sock, b"\n") == b"fed\n"
        assert ask(sock, b"z" * 50000) == b"z" * 50000 + b"\n"


def test_pipelined_lines_keep_their_order(loop: str) -> None:
    lines = [b"%d" % n for n in range(5000)]
    expected = b"".join(line[::-1] + b"\n" for line in lines)
    with serving(Reverse, loop) as running, running.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(x + b"\n" for x in lines),))
        sender.start()
        assert recv_exactly(sock, len(expected)) == expected
        sender.join(WAIT)


def test_read_readexactly_and_end_of_input(loop: str) -> None:
    results: list[object] = []
    done = threading.Event()

    class Mixed(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            header = await self.readexactly(4)
            body = await self.readexactly(int(header))
            line = await self.readline()
            some = await self.read(3)
            rest = await self.read()
            results.extend([header, body, line, some, rest])
            self.write(b"got it\n")
            try:
                await self.readexactly(5)
            except asyncio.IncompleteReadError as exc:
                results.append(exc.partial)
            results.append(await self.readline())
            results.append(await self.read())
            done.set()

    with serving(Mixed, loop) as running, running.connect() as sock:
        sock.sendall(b"0005hello")
        time.sleep(0.01)
        sock.sendall(b"a line\nabcdef")
        assert recv_until(sock, b"\n") == b"got it\n"
        sock.sendall(b"xy")
        sock.shutdown(socket.SHUT_WR)
        assert done.wait(WAIT)
        assert closed_by_server(sock)
    assert results == [b"0005", b"hello", b"a line\n", b"abc", b"def", b"xy", b"", b""]


def test_readline_at_end_of_input_returns_the_rest(loop: str) -> None:
    got: list[bytes] = []
    done = threading.Event()

    class Rest(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            got.append(await self.readline())
            got.append(await self.readline())
            got.append(await self.readline())
            done.set()

    with serving(Rest, loop) as running, running.connect() as sock:
        sock.sendall(b"one\nno newline")
        sock.shutdown(socket.SHUT_WR)
        assert done.wait(WAIT)
    assert got == [b"one\n", b"no newline", b""]


def test_a_line_too_long_raises_and_the_connection_closes(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caught: list[BaseException] = []

    class Short(aio.AsyncRequestHandler):
        max_line = 100

        async def handle(self) -> None:
            assert await self.readline() == b"x" * 100 + b"\n"
            try:
                await self.readline()
            except FrameTooLargeError as exc:
                caught.append(exc)
                self.write(b"too long\n")
            assert await self.readline() == b""  # the input has ended
            await self.readline()  # still ended: no error, no wait
            raise caught[0]

    with serving(Short, loop) as running, running.connect() as sock:
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(b"x" * 100 + b"\n" + b"y" * 1000)
        assert recv_until(sock, b"\n") == b"too long\n"
        assert closed_by_server(sock)
    assert isinstance(caught[0], FrameTooLargeError)
    assert "max_line (100 bytes)" in str(caught[0])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(client in m and "max_line" in m for m in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_state_lives_on_the_handler_and_finish_always_runs(loop: str) -> None:
    finished: list[tuple[int, str]] = []
    all_done = threading.Event()

    class Stateful(aio.AsyncRequestHandler):
        async def setup(self) -> None:
            self.count = 0

        async def handle(self) -> None:
            while line := await self.readline():
                self.count += 1
                if line == b"fail\n":
                    raise RuntimeError("handler failure")
                self.write(b"%d\n" % self.count)

        async def finish(self) -> None:
            await asyncio.sleep(0)  # finish may await
            finished.append((self.count, "finish"))
            if len(finished) == 2:
                all_done.set()

    with serving(Stateful, loop) as running:
        with running.connect() as one, running.connect() as two:
            assert ask(one, b"a") == b"1\n"
            assert ask(one, b"b") == b"2\n"
            assert ask(two, b"c") == b"1\n"
            one.sendall(b"fail\n")  # an error: finish still runs
            assert closed_by_server(one)
            assert ask(two, b"d") == b"2\n"
        assert all_done.wait(WAIT)
    assert sorted(finished) == [(2, "finish"), (3, "finish")]


def test_asyncio_apis_work_inside_handle(loop: str) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    observed: list[object] = []

    class UsesAsyncio(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.name = "-"
            while line := await self.readline():
                command = line.strip()
                # a context variable set here stays with this connection's task
                assert request_id.get() in ("-", self.name)
                if command.startswith(b"name "):
                    self.name = command[5:].decode()
                    request_id.set(self.name)
                    self.write(b"ok\n")
                elif command == b"whoami":
                    assert asyncio.current_task() is task
                    self.write(request_id.get().encode() + b"\n")
                elif command == b"sleep":
                    await asyncio.sleep(0.01)
                    await asyncio.sleep(0)
                    self.write(b"slept\n")
                elif command == b"timeout":
                    try:
                        async with asyncio.timeout(0.05):
                            await self.readline()  # the client sends nothing: times out
                    except TimeoutError:
                        self.write(b"timed out\n")
                    assert asyncio.current_task() is task
                elif command == b"timeout-ok":
                    async with asyncio.timeout(WAIT):
                        got = await self.readline()
                    self.write(b"in time: " + got)
                elif command == b"wait_for":
                    try:
                        await asyncio.wait_for(self.readline(), 0.05)
                    except TimeoutError:
                        self.write(b"wait_for timed out\n")
                    got = await asyncio.wait_for(self.readline(), WAIT)
                    self.write(b"wait_for got " + got)
                elif command == b"gather":
                    results = await asyncio.gather(asyncio.sleep(0.01, b"a"), self.read_two())
                    self.write(b"+".join(results) + b"\n")
                elif command == b"taskgroup":
                    async with asyncio.TaskGroup() as group:
                        first = group.create_task(asyncio.sleep(0.01, b"x"))
                        second = group.create_task(asyncio.sleep(0, b"y"))
                    self.write(first.result() + second.result() + b"\n")
                elif command == b"lock":
                    lock = asyncio.Lock()
                    async with lock:
                        event = asyncio.Event()
                        asyncio.get_running_loop().call_later(0.01, event.set)
                        await event.wait()
                    self.write(b"locked\n")
                observed.append(command)

        async def read_two(self) -> bytes:
            return (await self.readexactly(2)) + b"!"

    with (
        serving(UsesAsyncio, loop) as running,
        running.connect() as one,
        running.connect() as two,
    ):
        assert ask(one, b"name alice") == b"ok\n"
        assert ask(two, b"name bob") == b"ok\n"
        assert ask(one, b"whoami") == b"alice\n"
        assert ask(two, b"whoami") == b"bob\n"
        assert ask(one, b"sleep") == b"slept\n"
        assert ask(one, b"timeout") == b"timed out\n"
        assert ask(one, b"whoami") == b"alice\n"  # the connection goes on after it
        one.sendall(b"timeout-ok\n")
        time.sleep(0.02)
        assert ask(one, b"late") == b"in time: late\n"
        one.sendall(b"wait_for\n")
        assert recv_until(one, b"\n") == b"wait_for timed out\n"
        assert ask(one, b"now") == b"wait_for got now\n"
        one.sendall(b"gather\n")
        time.sleep(0.02)
        one.sendall(b"zz")
        assert recv_until(one, b"\n") == b"a+zz!\n"
        assert ask(one, b"taskgroup") == b"xy\n"
        assert ask(one, b"lock") == b"locked\n"
        assert ask(two, b"whoami") == b"bob\n"
    assert b"lock" in observed


def test_cancellation_while_waiting_for_input_runs_finish(loop: str) -> None:
    events: list[str] = []
    finished = threading.Event()

    class Cancellable(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_later(0.02, task.cancel)
            try:
                await self.readline()
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        async def finish(self) -> None:
            events.append("finish")
            finished.set()

    with serving(Cancellable, loop) as running, running.connect() as sock:
        assert finished.wait(WAIT)
        assert closed_by_server(sock)
        assert wait_until(lambda: running.server.connections == 0)
    assert events == ["cancelled", "finish"]


def test_setup_failure_skips_handle_and_finish_and_a_finish_failure_is_logged(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    class Staged(aio.AsyncRequestHandler):
        async def setup(self) -> None:
            await asyncio.sleep(0)  # a stage that waits, then goes on
            first = await self.readline()
            ran.append("setup " + first.decode().strip())
            if first == b"fail-setup\n":
                raise RuntimeError("setup failure")

        async def handle(self) -> None:
            ran.append("handle")
            self.write(b"ok\n")
            await self.readline()

        async def finish(self) -> None:
            ran.append("finish")
            raise LookupError("finish failure")

    with serving(Staged, loop) as running:
        with running.connect() as sock:
            sock.sendall(b"fail-setup\n")
            assert closed_by_server(sock)
        with running.connect() as sock:
            assert ask(sock, b"go") == b"ok\n"
        assert wait_until(lambda: running.server.connections == 0)
    assert ran == ["setup fail-setup", "setup go", "handle", "finish"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "Staged.setup failed for 127.0.0.1:" in errors[0]
    assert "Staged.finish failed for 127.0.0.1:" in errors[1]
    assert "RuntimeError: setup failure" in caplog.text
    assert "LookupError: finish failure" in caplog.text


def test_a_handle_that_is_not_async_is_an_error_of_that_connection_only(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    finished = threading.Event()

    class NotAsync(aio.AsyncRequestHandler):
        def handle(self) -> None:  # type: ignore[override]  # the mistake under test
            self.write(b"hi\n")

        async def finish(self) -> None:
            finished.set()

    with serving(NotAsync, loop) as running:
        with running.connect() as sock:
            assert recv_until(sock, b"\n") == b"hi\n"
            assert closed_by_server(sock)
        assert finished.wait(WAIT)  # finish() still ran
        assert wait_until(lambda: running.server.connections == 0)
    assert "NotAsync.handle failed for 127.0.0.1:" in caplog.text
    assert "must be a coroutine function (async def)" in caplog.text


def test_a_cancelled_handler_task_ends_cancelled_after_finish(loop: str) -> None:
    tasks: list[asyncio.Task[object]] = []
    finished = threading.Event()

    class Cancelled(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            task.cancel()
            await self.readline()

        async def finish(self) -> None:
            await asyncio.sleep(0)
            finished.set()

    with serving(Cancelled, loop) as running, running.connect() as sock:
        assert finished.wait(WAIT)
        assert closed_by_server(sock)
        assert wait_until(lambda: tasks[0].done())
        assert tasks[0].cancelled()


def test_one_reader_at_a_time(loop: str) -> None:
    errors: list[BaseException] = []

    class TwoReaders(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            first = asyncio.ensure_future(self.readline())
            await asyncio.sleep(0)  # the first reader starts waiting (the client waits)
            try:
                await self.readline()
            except RuntimeError as exc:
                errors.append(exc)
            self.write(b"ready\n")
            self.write(await first)

    with serving(TwoReaders, loop) as running, running.connect() as sock:
        assert recv_until(sock, b"\n") == b"ready\n"
        assert ask(sock, b"only one") == b"only one\n"
    assert "already waiting" in str(errors[0])


def test_a_second_reader_is_refused_even_when_input_is_buffered(loop: str) -> None:
    outcomes: list[object] = []

    class TwoReaders(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            first = asyncio.ensure_future(self.readline())
            await asyncio.sleep(0)  # the first reader waits for the rest of its line
            for _ in range(int(WAIT / 0.001)):  # until the client's "abc" is buffered
                if len(self._ns_buffer) - self._ns_start == 3:
                    break
                await asyncio.sleep(0.001)
            for read in (self.read, lambda: self.readexactly(1), self.readline):
                try:
                    outcomes.append(await read())
                except RuntimeError as exc:
                    outcomes.append(exc)
            self.write(await first)

    with serving(TwoReaders, loop) as running, running.connect() as sock:
        sock.sendall(b"abc")
        assert wait_until(lambda: len(outcomes) == 3)
        sock.sendall(b"d\n")
        assert recv_until(sock, b"\n") == b"abcd\n"  # the first reader's line, all of it
    assert all(isinstance(o, RuntimeError) and "already waiting" in str(o) for o in outcomes)


def test_drain_waits_while_a_read_waits_in_another_task(loop: str) -> None:
    chunk = b"d" * 65536
    total_chunks = 128  # 8 MiB: more than the kernel buffers hold, so drain() waits

    class FullDuplex(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            reader = asyncio.ensure_future(self.readline())
            await asyncio.sleep(0)  # the reader waits for the client's line
            for _ in range(total_chunks):
                self.write(chunk)
                await self.drain()
            self.write(b"then: " + await reader)

    with serving(FullDuplex, loop) as running, running.connect(small_buffers=True) as sock:
        assert wait_until(lambda: running.call(_waiting_in_drain, running.server))
        sock.sendall(b"hello\n")
        assert recv_exactly(sock, len(chunk) * total_chunks) == chunk * total_chunks
        assert recv_until(sock, b"\n") == b"then: hello\n"


def test_cancelling_one_drain_leaves_another_waiting(loop: str) -> None:
    chunk = b"d" * 65536
    total_chunks = 128  # 8 MiB: more than the kernel buffers hold, so drain() waits
    outcomes: list[str] = []

    class TwoDrains(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            for _ in range(total_chunks):
                self.write(chunk)
            helper = asyncio.ensure_future(self.drain())

            async def cancel_helper() -> None:
                await asyncio.sleep(0)  # by now this task and the helper wait in drain()
                helper.cancel()
                outcomes.append("helper cancelled")

            canceller = asyncio.ensure_future(cancel_helper())
            await self.drain()  # not cancelled with the helper's drain
            outcomes.append("drained")
            await canceller
            with contextlib.suppress(asyncio.CancelledError):
                await helper

    with serving(TwoDrains, loop) as running, running.connect(small_buffers=True) as sock:
        sock.sendall(b"go\n")
        assert wait_until(lambda: outcomes == ["helper cancelled"])  # the client reads after
        assert recv_exactly(sock, len(chunk) * total_chunks) == chunk * total_chunks
        assert wait_until(lambda: len(outcomes) == 2)
    assert outcomes == ["helper cancelled", "drained"]


def test_close_wakes_a_reader_waiting_in_another_task(loop: str) -> None:
    woke_with: list[bytes] = []

    class CloseWhileReading(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            reader = asyncio.ensure_future(self.readline())
            await asyncio.sleep(0)  # the reader waits for the client
            self.write(b"x" * (8 << 20))  # more than the kernel takes: the close must wait
            self.close()
            woke_with.append(await asyncio.wait_for(reader, WAIT))

    with (
        serving(CloseWhileReading, loop) as running,
        running.connect(small_buffers=True) as sock,
    ):
        assert wait_until(lambda: woke_with), "woken while the client is not reading yet"
        assert closed_by_server(sock)
        assert wait_until(lambda: running.server.connections == 0)
    assert woke_with == [b""]


def test_handler_errors_are_logged_and_close_that_connection_only(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Fails(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            while line := await self.readline():
                if line == b"boom\n":
                    raise ValueError("boom in handle")
                self.write(line)

    with serving(Fails, loop) as running, running.connect() as other, running.connect() as sock:
        sock.sendall(b"ok\nboom\n")
        assert recv_until(sock, b"\n") == b"ok\n"
        assert closed_by_server(sock)
        assert ask(other, b"still") == b"still\n"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "handle failed for 127.0.0.1:" in errors[0].getMessage()
    assert "ValueError: boom in handle" in caplog.text


def test_a_client_gone_mid_message_is_logged_at_debug(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netserve")

    class Exact(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            while True:
                self.write(await self.readexactly(10))

    with serving(Exact, loop) as running:
        with running.connect() as sock:
            sock.sendall(b"0123456789abc")
            assert recv_exactly(sock, 10) == b"0123456789"
        assert wait_until(lambda: running.server.connections == 0)
    assert "ended during handle: IncompleteReadError" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_drain_waits_for_a_slow_reader_and_the_server_buffers_boundedly(loop: str) -> None:
    chunk = b"d" * 65536
    total_chunks = 256  # 16 MiB: more than the kernel buffers hold
    progress: list[int] = []

    class Producer(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            for n in range(total_chunks):
                self.write(chunk)
                await self.drain()
                progress.append(n)

    with serving(Producer, loop) as running, running.connect(small_buffers=True) as sock:
        sock.sendall(b"go\n")
        assert wait_until(lambda: running.call(_waiting_in_drain, running.server))
        buffered = running.call(_write_buffered, running.server)
        assert buffered <= aio.WRITE_HIGH_WATER + len(chunk)
        assert len(progress) < total_chunks
        assert recv_exactly(sock, len(chunk) * total_chunks) == chunk * total_chunks
    assert len(progress) == total_chunks


def _waiting_in_drain(server: aio.AsyncServer) -> bool:
    return any(getattr(c, "_ns_drain_waiters", None) for c in server._connections.values())


def _write_buffered(server: aio.AsyncServer) -> int:
    return sum(c._ns_transport.get_write_buffer_size() for c in server._connections.values())


def test_a_client_that_sends_but_never_reads_is_bounded(loop: str) -> None:
    line = b"e" * 1023 + b"\n"
    total = 16 * 1024 * 1024

    class Echo(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            while data := await self.read():
                self.write(data)  # no drain: reading pauses while writes back up

    with serving(Echo, loop) as running, running.connect(small_buffers=True) as sock:
        sender = threading.Thread(target=sock.sendall, args=(line * (total // len(line)),))
        sender.start()
        assert wait_until(lambda: running.call(_paused, running.server))
        peaks = []
        for _ in range(20):
            peaks.append(running.call(_all_buffered, running.server))
            time.sleep(0.01)
        assert max(peaks) <= aio.WRITE_HIGH_WATER + aio.READ_BUFFER_LIMIT + 512 * 1024, peaks
        assert recv_exactly(sock, total // len(line) * len(line)) == line * (total // len(line))
        sender.join(WAIT)


def _paused(server: aio.AsyncServer) -> bool:
    return any(c._ns_paused for c in server._connections.values())


def _all_buffered(server: aio.AsyncServer) -> int:
    total = 0
    for c in server._connections.values():
        total += c._ns_transport.get_write_buffer_size()
        total += len(getattr(c, "_ns_buffer", b"")) - getattr(c, "_ns_start", 0)
    return total


def test_the_read_buffer_is_bounded_while_the_handler_is_busy(loop: str) -> None:
    gate = asyncio.Event()

    class Busy(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            await gate.wait()  # busy elsewhere: the client's bytes pile up, to a bound
            while data := await self.read():
                self.write(data)

    payload = b"p" * (16 * 1024 * 1024)
    with serving(Busy, loop) as running, running.connect() as sock:
        sock.sendall(b"start\n")
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert wait_until(lambda: running.call(_paused, running.server))
        assert running.call(_all_buffered, running.server) <= aio.READ_BUFFER_LIMIT + 256 * 1024
        running.call(gate.set)
        assert recv_exactly(sock, len(payload)) == payload
        sender.join(WAIT)


def test_writes_after_the_client_left_are_dropped_and_drain_raises(loop: str) -> None:
    outcome: list[str] = []
    done = threading.Event()

    class Late(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            await self.readline()
            while await self.read():
                pass  # until the client is gone
            await asyncio.sleep(0.01)
            self.write(b"nobody listens")  # dropped, no error
            try:
                await self.drain()
            except ConnectionResetError:
                outcome.append("drain raised")
            done.set()

    with serving(Late, loop) as running:
        with running.connect() as sock:
            sock.sendall(b"x\n")
        assert done.wait(WAIT)
    assert outcome in (["drain raised"], [])  # lost, or only half-closed: both are fine


def test_a_handler_cancelled_before_it_started_leaves_nothing_behind(loop: str) -> None:
    started: list[bool] = []

    class NeverRuns(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            started.append(True)

    async def main() -> None:
        server = aio.AsyncServer(NeverRuns, ["127.0.0.1:0"], drain_timeout=0)
        await server.start()
        made = asyncio.Event()
        original = NeverRuns._ns_opened

        def opened(self: aio.AsyncRequestHandler) -> None:
            original(self)
            assert self._ns_task is not None
            self._ns_task.cancel()  # before its first step
            made.set()

        NeverRuns._ns_opened = opened  # type: ignore[method-assign]  # the test's hook
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        await asyncio.wait_for(made.wait(), WAIT)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
        writer.close()
        await server.shutdown()

    aio.run(main(), loop)
    assert not started


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task factories are 3.12+")
def test_a_handler_done_in_an_eager_first_step_is_counted_out(loop: str) -> None:
    class Greets(aio.AsyncRequestHandler):
        async def handle(self) -> None:
            self.write(b"hello\n")  # and done, without waiting: in its task's first step

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        probe = asyncio.sleep(0)
        try:
            await loop.create_task(probe)
        except TypeError as exc:  # uvloop 0.23 on 3.13.0 passes it 3.14's eager_start
            probe.close()
            loop.set_task_factory(None)  # the loop's own shutdown makes tasks too
            pytest.skip(f"this loop cannot run asyncio.eager_task_factory: {exc}")
        server = aio.AsyncServer(Greets, ["127.0.0.1:0"], drain_timeout=0)
        await server.start()
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            assert await asyncio.wait_for(reader.read(), WAIT) == b"hello\n"
            writer.close()
        for _ in range(int(WAIT / 0.01)):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
        await server.shutdown()

    aio.run(main(), loop)
