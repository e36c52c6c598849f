"""``AsyncRequestHandler``: a coroutine per connection, with a lean read/write API built
straight on the ``asyncio.Protocol`` (no StreamReader/StreamWriter layers).

How the handler runs. Each connection has a real ``asyncio.Task``, so every asyncio API works
inside ``handle()``: ``asyncio.sleep``, ``timeout``, ``wait_for``, ``gather``, ``TaskGroup``,
``current_task()``, cancellation, context variables. The task's coroutine is a ``_Driver``,
which runs the handler's ``setup()``, ``handle()`` and ``finish()`` coroutines one after the
other (no coroutine of its own around them: one frame less per connection, and per wakeup),
passing the task's steps on to the one running. It is also what the handler yields when it
waits for its client: a future-like object that asyncio's Task accepts (it has
``_asyncio_future_blocking``, ``add_done_callback``, ``result`` and ``cancel``) and whose
wakeup the connection controls.

When the input arrives and the task is parked on its driver, ``data_received`` runs the
handler coroutine on itself, with the task entered as the current task (as asyncio's own
task step does) and in the task's context, until the handler waits for input again: the
reply is written in the same callback that read the request, with no Future, no scheduled
callback and no extra loop iteration per request. If the handler awaits anything else (a
sleep, a lock, another task), the driver hands that to the task, which waits on it as it
would have anyway. Where a task may be running (the server's stop, a ``close()`` from
another task), the driver wakes the task the ordinary way, with ``call_soon``.

``drain()`` does not use the driver: each call waits on a future of its own, resolved when
the transport resumes writing or the connection is lost, so that a read may wait in another
task meanwhile, and cancelling one drain leaves the others waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ClassVar, Final

from .._errors import ProtocolError
from .._listeners import format_address
from .._log import logger
from ..proto import DEFAULT_MAX_LINE, FrameTooLargeError
from ._connection import (
    CLOSING,
    LOST,
    OPEN,
    PAUSE_INPUT,
    PAUSE_WRITE,
    Connection,
    log_handler_error,
)

__all__ = ["READ_BUFFER_LIMIT", "READ_SIZE", "AsyncRequestHandler"]

#: Past this many bytes received and not yet read by the handler, the server stops reading
#: from the client until the handler reads (or waits for more than is buffered): so a client
#: can make the server hold about this plus one read (uvloop reads up to 256 KiB at a time).
#: Four maximum-length lines: room for a pipelining client without a pause per line.
READ_BUFFER_LIMIT: Final = 4 * DEFAULT_MAX_LINE
#: How much ``read()`` returns at most by default: one socket read's worth on most systems.
READ_SIZE: Final = 64 * 1024

# What the handler's task waits for (``_ns_want``); a positive number is a byte count.
_WANT_NOTHING: Final = 0
_WANT_LINE: Final = -1

_current_task = asyncio.current_task
# asyncio's own task step brackets each step with these: they make current_task() return the
# task. Private API (stable since 3.7); without it, a wakeup always goes through the task.
_enter_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None = getattr(
    asyncio.tasks, "_enter_task", None
)
_leave_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None = getattr(
    asyncio.tasks, "_leave_task", None
)
if _enter_task is None or _leave_task is None:  # pragma: no cover
    _enter_task = _leave_task = None


def _another_waiter() -> RuntimeError:
    return RuntimeError(
        "another coroutine is already waiting to read from this connection "
        "(one coroutine at a time may read)"
    )


class _Raised:
    """What the handler coroutine raised during a step made by ``data_received``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


# What a step made by data_received leaves for the task to take over (``_Driver.handoff``).
_NO_HANDOFF: Final[Any] = object()  # nothing: the coroutine waits on the driver again
_DONE: Final[Any] = object()  # the handler's last stage returned
_STAGE_ENDED: Final[Any] = object()  # the running stage returned or raised: start the next

# The stages a driver runs (``_Driver.stage``), in this order.
_NOT_STARTED: Final = 0
_SETUP: Final = 1
_HANDLE: Final = 2
_FINISH: Final = 3
_ENDED: Final = 4
_STAGE_NAMES: Final = ("", "setup", "handle", "finish", "")
#: The name of every connection's task.
_TASK_NAME: Final = "netserve.aio connection"


class _Driver(Coroutine[Any, None, None]):
    """The coroutine of a connection's task, and the future-like object its handler waits on.

    As a coroutine, it runs the handler's stages as ``AsyncRequestHandler`` says: ``setup()``
    (if overridden), ``handle()``, then ``finish()`` (if overridden) even when ``handle()``
    raised or was cancelled. An ``Exception`` from a stage is logged (``_ns_report``); a
    ``BaseException`` (a cancellation) is raised once ``finish()`` has run, so that it ends
    the task. ``send()`` and ``throw()`` pass the task's steps on to the running stage, and
    first hand over what a step made by ``data_received`` left (``handoff``): a future to
    wait on, or the end of the stages.

    As a future, asyncio's Task registers its wakeup with ``add_done_callback`` when the
    handler yields the driver, and the connection calls ``wake()`` (or steps the handler
    itself) when the wait is over. ``cancel()`` (from ``task.cancel()``, a timeout)
    schedules the wakeup, after which ``result()`` raises ``CancelledError`` into the
    handler, as an ``asyncio.Future`` would.
    """

    __slots__ = (
        "_asyncio_future_blocking",
        "_callback",
        "_cancel_message",
        "_cancelled",
        "_context",
        "_loop",
        "coro",
        "handler",
        "handoff",
        "raised",
        "send_to_coro",
        "stage",
    )

    def __init__(self, handler: AsyncRequestHandler, loop: asyncio.AbstractEventLoop) -> None:
        self.handler: AsyncRequestHandler | None = handler  # until the handler has ended
        self.stage = _NOT_STARTED
        self.coro: Coroutine[Any, Any, None] | None = None  # the running stage's
        self.send_to_coro: Callable[[Any], Any] | None = None  # coro.send, bound once a stage
        self.raised: BaseException | None = None  # by a stage: raised when the stages end
        self.handoff: Any = _NO_HANDOFF
        self._loop = loop  # read by asyncio's Task, as futures._get_loop() does
        self._asyncio_future_blocking = False
        self._callback: Callable[[Any], object] | None = None
        self._context: contextvars.Context | None = None
        self._cancelled = False
        self._cancel_message: object = None

    def __repr__(self) -> str:
        return f"<netserve.aio driver of {self.handler!r}>"

    # -- the coroutine the task runs -----------------------------------------------------------

    def send(self, value: None) -> Any:
        handoff = self.handoff
        if handoff is _NO_HANDOFF:
            send = self.send_to_coro
            if send is None:  # the task's first step
                return self.run_stages(None)
            try:
                return send(None)
            except StopIteration:
                error = None
            except BaseException as exc:
                error = exc
            return self.run_stages(error)  # outside the except: not during finish()
        self.handoff = _NO_HANDOFF
        if handoff is _DONE:
            raise StopIteration
        if type(handoff) is _Raised:
            raise handoff.error
        return handoff

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.handoff = _NO_HANDOFF  # a throw supersedes what a step left
        error = typ if val is None else val
        coro = self.coro
        if coro is None:  # no stage running: none has started (cancelled first), or all ended
            if self.stage == _NOT_STARTED:
                self.stage = _ENDED
                assert self.handler is not None
                self.handler._ns_ended()
            raise error
        try:
            return coro.throw(error)
        except StopIteration:
            error = None
        except BaseException as exc:
            error = exc
        return self.run_stages(error)

    def close(self) -> None:
        coro = self.coro
        if coro is not None:
            self.coro = self.send_to_coro = None
            coro.close()
        if self.stage != _ENDED:
            self.stage = _ENDED
            if self.handler is not None:
                self.handler._ns_ended()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("a connection's driver is run by its task, not awaited")

    def run_stages(self, error: BaseException | None) -> Any:
        """The running stage ended, raising *error* if not None (or none has started): start
        the next stages in turn, up to the first that waits, and return what it yields. When
        the last has ended, close the connection and raise ``StopIteration``, or the
        ``BaseException`` a stage raised."""
        while True:
            method = self._next_stage(error)
            if method is None:
                break
            try:
                coro = method()
            except BaseException as exc:  # before it could return a coroutine: the stage
                error = exc  # raised (a BaseException is raised once finish() has run)
                continue
            send = getattr(coro, "send", None)
            if send is None:
                error = TypeError(
                    f"{method.__qualname__}() must be a coroutine function (async def); "
                    f"it returned {coro!r}"
                )
                continue
            self.coro = coro
            self.send_to_coro = send
            try:
                return send(None)
            except StopIteration:
                error = None
            except BaseException as exc:
                error = exc
        self.coro = self.send_to_coro = None
        handler = self.handler
        assert handler is not None
        handler._ns_ended()
        raised = self.raised
        if raised is not None:
            self.raised = None
            raise raised
        raise StopIteration

    def _next_stage(
        self, error: BaseException | None
    ) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """The handler's method for the stage after the one that ended raising *error* (or
        None), which is then the running stage; None at the end."""
        handler = self.handler
        assert handler is not None
        stage = self.stage
        if error is not None:
            if isinstance(error, Exception):
                handler._ns_report(error, _STAGE_NAMES[stage])
            else:  # a cancellation, say: raised once finish() has run, to end the task
                self.raised = error
        cls = type(handler)
        if stage == _NOT_STARTED:
            if cls.setup is not AsyncRequestHandler.setup:  # not run if not overridden
                self.stage = _SETUP
                return handler.setup
            stage = _SETUP
        if stage == _SETUP and error is None:  # after setup() failed, neither of the others
            self.stage = _HANDLE
            return handler.handle
        if stage == _HANDLE and cls.finish is not AsyncRequestHandler.finish:
            self.stage = _FINISH
            return handler.finish
        self.stage = _ENDED
        return None

    # -- the future the handler waits on -----------------------------------------------------------

    def add_done_callback(
        self, callback: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        self._callback = callback
        self._context = context

    def remove_done_callback(self, callback: Callable[[Any], object]) -> int:
        if self._callback is None or self._callback != callback:
            return 0
        self._callback = self._context = None
        return 1

    def done(self) -> bool:
        return self._callback is None

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> None:
        if self._cancelled:
            message = self._cancel_message
            self._cancelled = False
            self._cancel_message = None
            raise asyncio.CancelledError() if message is None else asyncio.CancelledError(message)

    def cancel(self, msg: object = None) -> bool:
        callback = self._callback
        if callback is None:
            return False
        self._cancelled = True
        self._cancel_message = msg
        self._callback = None
        self._loop.call_soon(callback, self, context=self._context)
        self._context = None
        return True

    def wake(self) -> None:
        """Wake whatever task waits on this: now if no task is running, else soon."""
        callback = self._callback
        if callback is None:
            return
        self._callback = None
        context = self._context
        self._context = None
        if _current_task(self._loop) is not None:
            self._loop.call_soon(callback, self, context=context)
        elif context is None:
            callback(self)
        else:
            context.run(callback, self)


class AsyncRequestHandler(Connection):
    """Serve a connection with a coroutine: override ``handle()`` (and, if needed,
    ``setup()`` and ``finish()``, which always runs after ``handle()``, as in the sync
    handlers). One instance per connection: keep per-connection state on ``self``.

    I/O: ``await self.readline()``, ``await self.read(n)``, ``await self.readexactly(n)``,
    ``self.write(data)``, ``await self.drain()``, ``self.close()``. Reads wait for the
    client; one coroutine at a time may read (others may write and drain meanwhile). The
    reads and ``drain()`` return awaitables, not coroutine objects (no coroutine frame per
    call): ``await`` them, or give them to ``asyncio.wait_for``, ``gather`` or
    ``ensure_future``; ``asyncio.create_task`` refuses them from Python 3.12 on.

    Errors: an exception from ``setup``, ``handle`` or ``finish`` is logged with its
    traceback and closes this connection only; a ``ProtocolError`` (such as a line over
    ``max_line``) is logged as a warning without one; a connection error or an incomplete
    read after the client went away is logged at debug level. When the handler returns, the
    connection is closed once what it wrote is sent.

    A graceful stop gives each handler end-of-input at its next read that would wait for the
    client with nothing buffered, if the handler has written since a read last returned
    data (a read returns ``b""``; ``readexactly`` raises ``IncompleteReadError``): so a
    keep-alive loop ends between requests, and a request read in several parts (a header,
    then a body) is not cut in the middle. A handler that only reads, never writing, sets
    ``stop_at_idle_reads = True`` to end at its next read that would wait. Handlers still
    running at the drain timeout are cancelled (``finish()`` still runs).
    """

    #: The longest line ``readline()`` accepts, delimiter excluded; a longer one raises
    #: ``FrameTooLargeError`` (a ``ProtocolError``), after which the input counts as ended.
    max_line: ClassVar[int] = DEFAULT_MAX_LINE
    #: True: a graceful stop ends any read that waits for the client with nothing buffered,
    #: for handlers whose every read starts a new message (one that only receives, say).
    #: False: only once the handler has written since a read last returned data (see above).
    stop_at_idle_reads: ClassVar[bool] = False

    __slots__ = (
        "_ns_buffer",
        "_ns_drain_waiters",
        "_ns_driver",
        "_ns_eof",
        "_ns_start",
        "_ns_task",
        "_ns_want",
        "_ns_wrote",
    )

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self._ns_buffer: bytes | bytearray = b""  # received, not read: from _ns_start on
        self._ns_start = 0  # where the unread bytes begin (always 0 in a bytearray)
        self._ns_eof = False  # no more input: the client ended it, or a limit cut it
        self._ns_want = _WANT_NOTHING
        self._ns_task: asyncio.Task[None] | None = None  # until the handler has returned
        # written to since a read last returned data (or nothing read yet): the handler is
        # between requests, where a graceful stop may end its input
        self._ns_wrote = True
        # what the drain() calls waiting for writing to resume wait on: a future each, so
        # that a read may wait in another task meanwhile, and cancelling one drain (which
        # cancels the future it waits on) leaves the others waiting
        self._ns_drain_waiters: list[asyncio.Future[None]] | None = None

    # -- the handler's API ---------------------------------------------------------------

    async def setup(self) -> None:
        """Prepare for ``handle()``; the default does nothing. If it raises, the error is
        logged and neither ``handle()`` nor ``finish()`` runs."""

    async def handle(self) -> None:
        """Serve the connection; the default does nothing."""

    async def finish(self) -> None:
        """Clean up after ``handle()``, even when it raised or was cancelled; the default
        does nothing."""

    @types.coroutine
    def readline(self) -> Generator[Any, None, bytes]:
        """Read one line, up to and including ``b"\\n"``.

        At end of input, return what is left without a delimiter, or ``b""`` if nothing is.
        A line longer than ``max_line`` (delimiter excluded) raises ``FrameTooLargeError``;
        the line is discarded and the input counts as ended (later reads see end-of-input).
        """
        if self._ns_want:
            raise _another_waiter()
        searched = 0  # unread bytes already searched for the delimiter
        while True:
            buffer = self._ns_buffer
            start = self._ns_start
            end = buffer.find(b"\n", start + searched) + 1
            if end:
                if end - start > self.max_line + 1:
                    raise self._ns_cut_line(end - start - 1)
                if end != len(buffer) or type(buffer) is not bytes:
                    return self._ns_take(end)
                # the line ends the buffer (the usual case): no copy when it is all of it
                self._ns_buffer = b""
                self._ns_start = 0
                self._ns_wrote = False
                if self._ns_paused & PAUSE_INPUT:
                    self._ns_resume(PAUSE_INPUT)
                return buffer[start:] if start else buffer
            size = len(buffer) - start
            if size > self.max_line:
                raise self._ns_cut_line(size)
            if self._ns_eof or (not size and self.server._ns_stopping and self._ns_between()):
                return self._ns_take(len(buffer)) if size else self._ns_input_ended()
            searched = size
            # what _ns_arm does, inlined: this is the hot path
            self._ns_want = _WANT_LINE
            if self._ns_paused & PAUSE_INPUT:
                self._ns_resume(PAUSE_INPUT)
            driver = self._ns_driver
            driver._asyncio_future_blocking = True
            try:
                line = yield driver
            finally:
                self._ns_want = _WANT_NOTHING
            if line is not None:
                self._ns_wrote = False
                return line  # data_received passed a read that was exactly one line

    @types.coroutine
    def read(self, max_bytes: int = READ_SIZE) -> Generator[Any, None, bytes]:
        """Read up to *max_bytes* bytes (at least one, waiting if none are buffered);
        ``b""`` at end of input."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if self._ns_want:
            raise _another_waiter()
        while True:
            start = self._ns_start
            size = len(self._ns_buffer) - start
            if size:
                return self._ns_take(start + min(size, max_bytes))
            if self._ns_eof or (self.server._ns_stopping and self._ns_between()):
                return self._ns_input_ended()
            waiter = self._ns_arm(1)
            try:
                yield waiter
            finally:
                self._ns_want = _WANT_NOTHING

    @types.coroutine
    def readexactly(self, n: int) -> Generator[Any, None, bytes]:
        """Read exactly *n* bytes; at end of input before that, raise
        ``asyncio.IncompleteReadError`` holding the bytes that came."""
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        if self._ns_want:
            raise _another_waiter()
        while True:
            start = self._ns_start
            size = len(self._ns_buffer) - start
            if size >= n:
                return self._ns_take(start + n) if n else b""
            if self._ns_eof or (not size and self.server._ns_stopping and self._ns_between()):
                partial = self._ns_take(len(self._ns_buffer)) if size else self._ns_input_ended()
                raise asyncio.IncompleteReadError(partial, n)
            waiter = self._ns_arm(n - size)
            try:
                yield waiter
            finally:
                self._ns_want = _WANT_NOTHING

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue *data* for the client; never blocks. Dropped once the connection is closed.
        A handler that writes much should ``await self.drain()``."""
        if self._ns_state == OPEN:
            self._ns_transport.write(data)
            if not self._ns_wrote:
                self._ns_wrote = True
                if self.server._ns_stopping:
                    self._ns_begin_stop()  # a read waiting in another task is now between

    @types.coroutine
    def drain(self) -> Generator[Any, None, None]:
        """Wait until the client has read enough of what was written (the transport is
        below its low-water mark). Raises ``ConnectionResetError`` if the connection is
        lost. A read may wait in another task meanwhile."""
        while self._ns_paused & PAUSE_WRITE and self._ns_state != LOST:
            waiters = self._ns_drain_waiters
            if waiters is None:
                waiters = self._ns_drain_waiters = []
            waiter: asyncio.Future[None] = self.server._ns_loop.create_future()
            waiters.append(waiter)
            try:
                yield from waiter
            finally:
                waiters.remove(waiter)
        if self._ns_state == LOST:
            raise ConnectionResetError(
                f"connection from {format_address(self.client_address)} lost"
            )

    def close(self) -> None:
        """Close the connection once what was written is sent; reads then see end-of-input
        (a read already waiting, in another task, too)."""
        self._ns_end_input()
        self._ns_close()
        want = self._ns_want
        if want > 0 or want == _WANT_LINE:
            self._ns_driver.wake()

    # -- input -----------------------------------------------------------------------------

    def _ns_arm(self, want: int) -> _Driver:
        """Say what the task is about to wait for; return the driver, for it to yield. The
        read that calls it has checked, on entry, that no other coroutine waits."""
        self._ns_want = want
        if self._ns_paused & PAUSE_INPUT:
            self._ns_resume(PAUSE_INPUT)  # the handler needs more than the buffer holds
        driver = self._ns_driver
        driver._asyncio_future_blocking = True
        return driver

    def _ns_take(self, end: int) -> bytes:
        """Remove and return the unread bytes up to index *end* of the buffer."""
        self._ns_wrote = False
        buffer = self._ns_buffer
        start = self._ns_start
        if type(buffer) is bytes:
            if end == len(buffer):
                chunk = buffer[start:] if start else buffer
                self._ns_buffer = b""
                self._ns_start = 0
            else:
                chunk = buffer[start:end]
                self._ns_start = end
        else:
            assert isinstance(buffer, bytearray)
            chunk = bytes(buffer[:end])
            del buffer[:end]  # from the front of a bytearray: no copy of the rest
            if not buffer:
                self._ns_buffer = b""
        if self._ns_paused & PAUSE_INPUT and (
            len(self._ns_buffer) - self._ns_start <= READ_BUFFER_LIMIT
        ):
            self._ns_resume(PAUSE_INPUT)
        return chunk

    def _ns_cut_line(self, size: int) -> FrameTooLargeError:
        """A line over max_line: drop the input, end it, and return the error to raise."""
        self._ns_end_input()
        limit = self.max_line
        return FrameTooLargeError(
            f"line longer than max_line ({limit} bytes): {size} bytes without a delimiter"
            if size > limit
            else f"line of {size} bytes is longer than max_line ({limit} bytes)",
            size,
            limit,
        )

    def _ns_end_input(self) -> None:
        """No more input: drop what is buffered; later data is discarded."""
        self._ns_buffer = b""
        self._ns_start = 0
        self._ns_eof = True
        self._ns_resume(PAUSE_INPUT)  # keep reading, to discard, so a close sends no reset

    def _ns_between(self) -> bool:
        """Whether the handler is between requests, where a graceful stop may end a read."""
        return self._ns_wrote or self.stop_at_idle_reads

    def _ns_input_ended(self) -> bytes:
        """A read found nothing buffered and no more to wait for (the client ended its input,
        or a graceful stop ended it between requests): it counts as ended from now on."""
        self._ns_eof = True
        return b""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def _ns_opened(self) -> None:
        loop = self.server._ns_loop
        driver = self._ns_driver = _Driver(self, loop)
        # one name for all: a name per task would be a string per connection
        task = loop.create_task(driver, name=_TASK_NAME)
        # an eager task factory (3.12+) runs the first step in create_task(): a handler that
        # ended there has already counted itself out (_ns_ended), and must stay so
        if not task.done():
            self._ns_task = task

    def data_received(self, data: bytes) -> None:
        self._ns_idle = 0
        buffer = self._ns_buffer
        if not buffer:
            if self._ns_eof:
                return  # the input was cut (a line too long): discard
            if (
                self._ns_want == _WANT_LINE
                and data.find(b"\n") == len(data) - 1
                and len(data) <= self.max_line + 1
                and self._ns_resume_task(data)
            ):
                return  # the read was one whole line, the one readline() waits for
            self._ns_buffer = buffer = data
        elif type(buffer) is bytes:
            merged = bytearray(buffer)
            del merged[: self._ns_start]
            merged += data
            self._ns_buffer = buffer = merged
            self._ns_start = 0
        else:
            buffer += data
        want = self._ns_want
        if want:
            if want == _WANT_LINE:
                if b"\n" in data or len(buffer) - self._ns_start > self.max_line:
                    self._ns_wake_task()
            elif want > 0 and len(buffer) - self._ns_start >= want:
                self._ns_wake_task()
        elif len(buffer) - self._ns_start > READ_BUFFER_LIMIT:
            self._ns_pause(PAUSE_INPUT)

    def eof_received(self) -> bool:
        self._ns_eof = True
        if self._ns_want > 0 or self._ns_want == _WANT_LINE:
            self._ns_wake_task()
        return True  # keep our side open: the handler may still write

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._ns_state
        if state != OPEN and state != CLOSING:  # neither open nor closing: refused, or done
            return
        self._ns_state = LOST
        self._ns_eof = True
        self._ns_wake_drain()
        if self._ns_want:
            self._ns_wake_task()
        if self._ns_task is None:
            self.server._ns_forget(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._ns_wake_drain()

    def _ns_wake_drain(self) -> None:
        for waiter in self._ns_drain_waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- the task ----------------------------------------------------------------------------

    def _ns_wake_task(self) -> None:
        """The wait is over: run the handler on, here if the task is parked on the driver
        (``_ns_resume_task``), else through the task.

        Only for the protocol callbacks the loop makes (data_received, eof_received,
        connection_lost), where no task is running."""
        if self._ns_driver._callback is not None and not self._ns_resume_task(None):
            self._ns_driver.wake()  # e.g. a wait_for() or gather() task is the one waiting

    def _ns_resume_task(self, value: bytes | None) -> bool:
        """Run the handler coroutine on from its wait on the driver, sending it *value* (a
        line for ``readline()``, or None: look at the buffer), with its task entered as
        the current task and in the task's context, as asyncio's own task step does.

        Return False, having done nothing, when the task is not parked on the driver
        (nobody waits yet, or a ``wait_for()`` or ``gather()`` task is the one waiting)."""
        driver = self._ns_driver
        task = self._ns_task
        send = driver.send_to_coro
        context = driver._context
        if (
            driver._callback is None
            or task is None
            or send is None
            or context is None
            or _enter_task is None
            or _leave_task is None
            or task._fut_waiter is not driver  # type: ignore[attr-defined]
        ):
            return False
        loop = driver._loop
        _enter_task(loop, task)
        try:
            try:
                yielded = context.run(send, value)
            except StopIteration:
                yielded, error = _STAGE_ENDED, None
            except BaseException as exc:
                yielded, error = _STAGE_ENDED, exc
            if yielded is _STAGE_ENDED:
                yielded = context.run(driver.run_stages, error)
            if yielded is driver:
                return True  # waiting for input again: the task stays parked on the driver
            handoff = yielded  # something else to wait on: the task takes it over
        except StopIteration:
            handoff = _DONE
        except BaseException as exc:
            handoff = _Raised(exc)
        finally:
            _leave_task(loop, task)
        driver.handoff = handoff
        driver.wake()
        return True

    def _ns_ended(self) -> None:
        """The handler is done: close the connection, or count it out if already closed."""
        self._ns_task = None
        self._ns_driver.handler = None  # no cycle: freed as soon as the connection is
        if self._ns_state == LOST:
            self.server._ns_forget(self)
        else:
            self._ns_close()

    def _ns_report(self, exc: Exception, where: str) -> None:
        """Log what the handler raised in *where* (a stage), as the class says."""
        if isinstance(exc, ProtocolError):
            self._ns_log_closing(logging.WARNING, exc)
        elif isinstance(exc, ConnectionError | asyncio.IncompleteReadError) and self._ns_eof:
            logger.debug(
                "connection from %s ended during %s: %r",
                format_address(self.client_address),
                where,
                exc,
            )
        else:
            log_handler_error(self, where, exc)

    # -- the server's side -------------------------------------------------------------------

    def _ns_waiting_for_client(self) -> bool:
        return bool(self._ns_want) or super()._ns_waiting_for_client()

    def _ns_begin_stop(self) -> None:
        # a read waiting with nothing buffered, between requests: end its input
        want = self._ns_want
        if (
            (want > 0 or want == _WANT_LINE)
            and len(self._ns_buffer) == self._ns_start
            and self._ns_between()
        ):
            self._ns_driver.wake()  # from the stop task: with call_soon

    def _ns_force_stop(self) -> None:
        task = self._ns_task
        if task is not None:
            task.cancel()
        self._ns_abort()
