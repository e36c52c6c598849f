"""Message handlers: a method called once per line (``LineHandler``) or per length-prefixed
frame (``LengthPrefixedHandler``), whose return value is the reply.

Framing is done by ``netserve.proto``, except on the hot path: a read that holds exactly one
whole message is handled without a framer (the usual case for request/response clients), so
an idle connection holds no framer at all.

With ``blocking = False`` (the default) the handler runs on the event loop: it must not
block. With ``blocking = True`` every call into the handler (``setup``, the message method,
``finish``) runs in the server's bounded thread pool while the loop keeps holding the
connections. Either way a connection's messages are handled one at a time, in order, and
the replies keep that order: in blocking mode the messages that arrive while one is being
handled wait in a per-connection queue; past ``MAX_QUEUED_MESSAGES`` messages or
``MAX_QUEUED_BYTES`` bytes the server stops reading from that client until the queue is
taken. In both modes, once the replies to one read's messages pass ``WRITE_HIGH_WATER``
bytes and the client does not take them, the messages left wait in that queue (reading
paused) until it does: a client that pipelines small requests for large replies and reads
nothing cannot make the server hold more than about one high-water mark of replies.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from typing import ClassVar, Final

from .._errors import ConfigError, ProtocolError
from .._listeners import format_address
from .._log import logger
from ..proto import (
    DEFAULT_MAX_LINE,
    EOF,
    NEED_DATA,
    Framer,
    IncompleteFrameError,
    LengthPrefixedFramer,
    LineFramer,
)
from ._connection import (
    LOST,
    OPEN,
    PAUSE_HELD,
    PAUSE_INPUT,
    PAUSE_WRITE,
    WRITE_HIGH_WATER,
    Connection,
    log_handler_error,
)

__all__ = [
    "MAX_FRAME",
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_MESSAGES",
    "LengthPrefixedHandler",
    "LineHandler",
]

#: Messages one connection may have waiting for a thread (blocking handlers) before the
#: server stops reading from it: enough to keep a pipelining client's requests flowing, few
#: enough that 10,000 connections cannot queue unbounded work. One read can add more than
#: this at once (it is handled whole), so the bound is this plus one read's worth.
MAX_QUEUED_MESSAGES: Final = 128
#: Bytes of messages one connection may have waiting for a thread before the server stops
#: reading from it: the count alone would let a client queue 128 messages of the largest
#: size (128 MiB of ``MAX_FRAME`` frames). 1 MiB still keeps a pipelining client's requests
#: flowing. As with the count, one read can add more at once, and a message larger than
#: this is queued alone.
MAX_QUEUED_BYTES: Final = 1024 * 1024

#: The largest length-prefixed frame accepted by default: 1 MiB. A frame is held whole in
#: memory before it is handled, and an event-loop server holds thousands of connections, so
#: this is lower than ``netserve.proto``'s 16 MiB default (made for one connection).
MAX_FRAME: Final = 1024 * 1024

#: Length headers by size in bytes: big-endian unsigned, as ``LengthPrefixedFramer`` reads.
_HEADERS: Final = {
    size: struct.Struct(f">{code}") for size, code in zip((1, 2, 4, 8), "BHIQ", strict=True)
}


class _MessageHandler(Connection):
    """What the line and frame handlers share: setup/finish, the blocking mode, the queue,
    closing at the right moment. Subclasses parse (``_ns_new_framer``) and frame replies
    (``_ns_respond``)."""

    #: False: the message method runs on the event loop and must not block. True: it runs in
    #: the server's thread pool (``threads``), one message at a time per connection.
    blocking: ClassVar[bool] = False

    #: The message method's name, for log lines.
    _ns_method: ClassVar[str]

    __slots__ = (
        "_ns_busy",
        "_ns_close_requested",
        "_ns_ending",
        "_ns_eof",
        "_ns_framer",
        "_ns_pending",
        "_ns_setup_done",
    )

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.blocking, bool):
            raise ConfigError(f"{cls.__qualname__}.blocking: expected True or False")

    def __init__(self, server: object) -> None:
        super().__init__(server)  # type: ignore[arg-type]
        self._ns_framer: Framer | None = None  # only while a message is partly received
        self._ns_pending: list[bytes] | None = None  # blocking: messages waiting for a thread
        self._ns_busy = False  # blocking: a job of this connection is queued or running
        self._ns_ending: bytes | None = None  # close once nothing is pending, sending this
        self._ns_eof = False  # the client ended its side; close once the replies are out
        self._ns_close_requested = False
        self._ns_setup_done = False

    # -- the handler's API ---------------------------------------------------------------

    def setup(self) -> None:
        """Called once per connection before its first message (in a pool thread when
        ``blocking``). If it raises, the error is logged, the connection closed, and
        ``finish()`` not called. The default does nothing."""

    def finish(self) -> None:
        """Called once when the connection has ended, if ``setup()`` succeeded (in a pool
        thread when ``blocking``); its errors are logged. The default does nothing."""

    def close(self) -> None:
        """Close the connection once the reply to the current message is sent; the messages
        after it are not handled. Call it from ``setup()`` or the message method (from its
        thread too, when ``blocking``)."""
        self._ns_close_requested = True

    # -- parsing and replies (subclasses) ----------------------------------------------------

    def _ns_new_framer(self) -> Framer:
        raise NotImplementedError

    def _ns_respond(self, message: bytes) -> bytes | None:
        """Call the message method; return its reply, framed, or None."""
        raise NotImplementedError

    def _ns_error_reply(self, error: ProtocolError) -> bytes:
        """What to send a client that broke the framing, before closing (b"": nothing)."""
        return b""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def _ns_opened(self) -> None:
        if self.blocking:
            self._ns_busy = True
            self._ns_submit(self._ns_job_setup, None)
            return
        if type(self).setup is not _MessageHandler.setup:  # not called if not overridden
            try:
                self.setup()
            except Exception:
                log_handler_error(self, "setup")
                self._ns_close()
                return
        self._ns_setup_done = True
        if self._ns_close_requested:
            self._ns_close()

    def _ns_received(self, data: bytes) -> None:
        """``data_received`` beyond the one-whole-message fast path."""
        if self._ns_state != OPEN or self._ns_ending is not None:
            return  # closing, or lingering after an error reply: discard
        framer = self._ns_framer
        if framer is None:
            framer = self._ns_framer = self._ns_new_framer()
        try:
            messages = framer.frames(data)
        except ProtocolError as exc:
            messages = _complete_before(framer)
            self._ns_framer = None
            self._ns_ending = self._ns_error_reply(exc)
            self._ns_log_closing(logging.WARNING, exc)
        else:
            if not framer.buffered:
                self._ns_framer = None  # nothing partial: hold no framer while idle
        last = self.server._ns_stopping and bool(messages)
        if last:  # the message a graceful stop waited for (see _ns_begin_stop): the last
            del messages[1:]
            self._ns_framer = None
        if self.blocking:
            if last:
                self._ns_ending = b""  # close once its reply is sent
            self._ns_enqueue(messages)
            return
        if last and self._ns_ending is None:
            self._ns_ending = b""  # close once its reply is sent
        self._ns_serve(messages)

    def eof_received(self) -> bool:
        framer = self._ns_framer
        if framer is not None:
            self._ns_framer = None
            self._ns_log_partial(framer, "closed")
        if self._ns_busy or self._ns_pending:
            self._ns_eof = True
            return True  # keep our side open until the replies in flight are sent
        return False  # the transport closes, after sending what is buffered

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._ns_state
        if state == LOST or state < OPEN or state > LOST:
            return  # refused (or never made): nothing was started
        self._ns_state = LOST
        framer = self._ns_framer
        if framer is not None:
            self._ns_framer = None
            if exc is not None:
                self._ns_log_partial(framer, "lost")
        self._ns_pending = None
        if self.blocking:
            if not self._ns_busy:
                self._ns_settle()
            return
        if self._ns_setup_done and type(self).finish is not _MessageHandler.finish:
            self._ns_setup_done = False
            try:
                self.finish()
            except Exception:
                log_handler_error(self, "finish")
        self.server._ns_forget(self)

    def _ns_log_partial(self, framer: Framer, how: str) -> None:
        """A client that closed (or lost) the connection mid-message: a debug line."""
        framer.feed_eof()
        try:
            while framer.next_event() not in (EOF, NEED_DATA):
                pass
        except IncompleteFrameError as exc:
            logger.debug(
                "connection from %s %s mid-message: %s",
                format_address(self.client_address),
                how,
                exc,
            )
        except ProtocolError:
            pass

    # -- serving messages ----------------------------------------------------------------------

    def _ns_run(self, messages: list[bytes]) -> tuple[list[bytes], bool, list[bytes] | None]:
        """Handle *messages* in order until one fails, the handler asks to close, or the
        replies pass ``WRITE_HIGH_WATER`` bytes; return the framed replies, whether the
        handler raised (logged here, with traceback), and the messages not handled because
        the replies passed the mark (None if there are none)."""
        parts: list[bytes] = []
        size = 0
        respond = self._ns_respond
        remaining = iter(messages)
        try:
            for message in remaining:
                reply = respond(message)
                if reply is not None:
                    parts.append(reply)
                    size += len(reply)
                if self._ns_close_requested:
                    break
                if size > WRITE_HIGH_WATER:
                    return parts, False, list(remaining) or None
        except Exception:
            log_handler_error(self, self._ns_method)
            return parts, True, None
        return parts, False, None

    def _ns_serve(self, messages: list[bytes]) -> None:
        """Inline mode: handle *messages*, write their replies, then close if the handler
        failed or asked to, or if an error reply or a stop is due (``_ns_ending``). When the
        replies pass ``WRITE_HIGH_WATER`` bytes and the client does not take them (the
        transport paused writing), the messages left wait in ``_ns_pending`` with reading
        paused; ``resume_writing`` goes on with them."""
        while True:
            parts, failed, rest = self._ns_run(messages)
            if parts and self._ns_state == OPEN:
                self._ns_transport.write(b"".join(parts))
            if failed:
                self._ns_close()
                return
            if rest is None:
                break
            if self._ns_paused & PAUSE_WRITE:
                self._ns_pending = rest
                self._ns_pause(PAUSE_HELD)
                return
            messages = rest
        if self._ns_ending is not None:
            self._ns_close_after_error(self._ns_ending, client_done=self._ns_eof)
        elif self._ns_close_requested or self._ns_eof:
            self._ns_close()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._ns_pending is not None and not self._ns_busy:
            # messages wait for the client to read (see _ns_serve, _ns_settle); not from
            # here, where the transport is in the middle of its own write handling
            self.server._ns_loop.call_soon(self._ns_go_on)

    def _ns_go_on(self) -> None:
        """The client read its replies: handle the messages that waited for it."""
        pending = self._ns_pending
        if pending is None or self._ns_busy or self._ns_state != OPEN:
            return
        if self._ns_paused & PAUSE_WRITE:
            return  # paused again meanwhile: the next resume_writing comes back here
        if self.blocking:
            self._ns_settle()
            return
        self._ns_pending = None
        self._ns_serve(pending)
        if self._ns_pending is None:
            self._ns_resume(PAUSE_HELD)

    def _ns_enqueue(self, messages: list[bytes]) -> None:
        """Blocking mode: queue *messages*; hand them to a thread if none is at work."""
        if messages:
            pending = self._ns_pending
            if pending is None:
                self._ns_pending = pending = messages
            else:
                pending.extend(messages)
            if self._ns_busy and _queue_full(pending):
                self._ns_pause(PAUSE_INPUT)  # until _ns_settle hands the queue to a thread
        if not self._ns_busy:
            self._ns_settle()

    def _ns_settle(self) -> None:
        """Blocking mode, nothing running: start the next job, or close, as the state says."""
        state = self._ns_state
        if state == LOST:
            self._ns_pending = None
            if self._ns_setup_done:
                self._ns_setup_done = False
                self._ns_busy = True
                self._ns_submit(self._ns_job_finish, None)
            else:
                self.server._ns_forget(self)
            return
        if state != OPEN:
            return
        if self._ns_close_requested:
            self._ns_pending = None
            if self._ns_ending is None:
                self._ns_ending = b""
        pending = self._ns_pending
        if pending and self._ns_paused & PAUSE_WRITE:
            return  # the client does not read its replies: resume_writing comes back here
        if pending:
            self._ns_pending = None
            self._ns_resume(PAUSE_INPUT)
            self._ns_busy = True
            self._ns_submit(self._ns_job_batch, pending)
        elif self._ns_ending is not None:
            self._ns_close_after_error(self._ns_ending, client_done=self._ns_eof)
        elif self._ns_eof:
            self._ns_close()

    def _ns_submit(self, job: object, arg: object) -> None:
        pool = self.server._ns_pool
        try:
            if pool is None:
                raise RuntimeError("no thread pool")
            pool.submit(job, arg)  # type: ignore[arg-type]
        except RuntimeError:
            # the server has stopped: nothing can run this connection's handler any more
            self._ns_busy = False
            self._ns_setup_done = False
            self._ns_abort()
            if self._ns_state == LOST:
                self.server._ns_forget(self)

    def _ns_report(
        self, parts: list[bytes] | None, failed: bool, rest: list[bytes] | None = None
    ) -> None:
        """From a pool thread: hand a job's outcome to the event loop."""
        # a closed loop: the server is gone, and this connection with it
        with contextlib.suppress(RuntimeError):
            self.server._ns_loop.call_soon_threadsafe(self._ns_job_done, parts, failed, rest)

    # -- jobs: these run in pool threads -------------------------------------------------------
    # A BaseException from the handler (SystemExit, KeyboardInterrupt) is left to the pool,
    # which logs it; the job still reports, so that the connection is closed and counted out
    # rather than left busy for ever.

    def _ns_job_setup(self, _: object) -> None:
        try:
            self.setup()
        except Exception:
            log_handler_error(self, "setup")
            self._ns_report(None, True)
            return
        except BaseException:
            self._ns_report(None, True)
            raise
        self._ns_setup_done = True
        self._ns_report(None, False)

    def _ns_job_batch(self, messages: list[bytes]) -> None:
        try:
            parts, failed, rest = self._ns_run(messages)
        except BaseException:
            self._ns_report(None, True)
            raise
        self._ns_report(parts, failed, rest)

    def _ns_job_finish(self, _: object) -> None:
        try:
            self.finish()
        except Exception:
            log_handler_error(self, "finish")
        finally:
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
                self.server._ns_loop.call_soon_threadsafe(self.server._ns_forget, self)

    # -- back on the loop ----------------------------------------------------------------------

    def _ns_job_done(
        self, parts: list[bytes] | None, failed: bool, rest: list[bytes] | None
    ) -> None:
        """A setup or batch job is done: send its replies (*parts*; None for setup), close if
        the handler failed, put the messages it left (*rest*: its replies passed the
        high-water mark) back at the head of the queue, and go on."""
        self._ns_busy = False
        if parts and self._ns_state == OPEN:
            self._ns_transport.write(b"".join(parts))
        if failed:
            self._ns_pending = None
            self._ns_close()
        elif rest is not None and self._ns_state == OPEN:
            if self._ns_pending:
                rest += self._ns_pending
            self._ns_pending = rest
            self._ns_pause(PAUSE_HELD)  # read on once the batches left find room
        elif self._ns_paused & PAUSE_HELD:
            self._ns_resume(PAUSE_HELD)
        self._ns_settle()

    # -- stopping ------------------------------------------------------------------------------

    def _ns_waiting_for_client(self) -> bool:
        return (self._ns_state == OPEN and not self._ns_busy) or super()._ns_waiting_for_client()

    def _ns_begin_stop(self) -> None:
        if self._ns_state != OPEN:
            return
        if not self._ns_busy:
            framer = self._ns_framer
            if framer is None or not framer.buffered:
                self._ns_close()  # between messages
            # else a message is partly received: _ns_received handles it once complete,
            # then closes (or the drain timeout does)
            return
        # a message is being handled: let it finish and send its reply, then close; the
        # messages queued behind it are dropped and no more are read
        self._ns_pending = None
        if self._ns_ending is None:
            self._ns_ending = b""
        self._ns_pause(PAUSE_INPUT)


def _queue_full(pending: list[bytes]) -> bool:
    """Whether a connection's queue holds enough that reading from its client should wait.

    The bytes are counted here rather than kept in a running total, which would cost every
    connection a slot: the queue is short (reading pauses at these bounds), and is summed
    only while a thread is busy with the connection."""
    return len(pending) >= MAX_QUEUED_MESSAGES or sum(map(len, pending)) >= MAX_QUEUED_BYTES


def _complete_before(framer: Framer) -> list[bytes]:
    """The frames a poisoned framer completed before its error (after ``frames()`` raised)."""
    messages: list[bytes] = []
    try:
        while True:
            event = framer.next_event()
            if event is NEED_DATA or event is EOF:
                return messages
            messages.append(event)
    except ProtocolError:
        return messages


class LineHandler(_MessageHandler):
    """Serve a line protocol: ``handle_line(line)`` is called for each line received, without
    its delimiter, and the bytes it returns are sent followed by the delimiter (None sends
    nothing). One instance per connection: keep per-connection state on ``self``.

    Class attributes: ``delimiter`` (``b"\\n"``; nothing else is stripped, so a ``b"\\r"``
    before it stays in the line), ``max_line`` (the longest line accepted, delimiter
    excluded), ``error_reply`` (sent, with the delimiter, to a client whose line is too long,
    before the connection is closed; empty: nothing is sent), ``blocking`` (see the module).

    Errors: a line over ``max_line`` gets ``error_reply``, a warning log line and a close; an
    exception from ``handle_line`` is logged with its traceback and closes that connection
    only (the replies to the lines before it are sent); a client that closes mid-line is
    logged at debug level. Define ``__slots__`` in a subclass for the least memory per
    connection.
    """

    delimiter: ClassVar[bytes] = b"\n"
    max_line: ClassVar[int] = DEFAULT_MAX_LINE
    error_reply: ClassVar[bytes] = b"error: line too long"
    _ns_method: ClassVar[str] = "handle_line"

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.delimiter, bytes) or not cls.delimiter:
            raise ConfigError(f"{cls.__qualname__}.delimiter: expected non-empty bytes")
        if not isinstance(cls.max_line, int) or cls.max_line < 1:
            raise ConfigError(f"{cls.__qualname__}.max_line: must be at least 1")
        if not isinstance(cls.error_reply, bytes):
            raise ConfigError(f"{cls.__qualname__}.error_reply: expected bytes")

    def handle_line(self, line: bytes) -> bytes | None:
        """Return the reply to *line* (sent with the delimiter), or None to send nothing.
        The default sends nothing."""
        return None

    def data_received(self, data: bytes) -> None:
        self._ns_idle = 0
        delimiter = self.delimiter
        end = len(data) - len(delimiter)
        # the fast path: the read is exactly one whole line and nothing is pending
        if (
            self._ns_framer is None
            and 0 <= end <= self.max_line
            and data.find(delimiter) == end
            and self._ns_state == OPEN
            and not self.blocking
        ):
            try:
                reply = self.handle_line(data[:end])
            except Exception:
                log_handler_error(self, "handle_line")
                self._ns_close()
                return
            if reply is not None:
                self._ns_transport.write(reply + delimiter)
            if self._ns_close_requested:
                self._ns_close()
            return
        self._ns_received(data)

    def _ns_new_framer(self) -> Framer:
        return LineFramer(self.max_line, self.delimiter)

    def _ns_respond(self, message: bytes) -> bytes | None:
        reply = self.handle_line(message)
        return None if reply is None else reply + self.delimiter

    def _ns_error_reply(self, error: ProtocolError) -> bytes:
        return self.error_reply + self.delimiter if self.error_reply else b""


class LengthPrefixedHandler(_MessageHandler):
    """Serve length-prefixed frames: ``handle_frame(frame)`` is called with each frame's
    payload, and the bytes it returns are sent as a frame with the same header (None sends
    nothing). One instance per connection: keep per-connection state on ``self``.

    Class attributes: ``header`` (the length header's size: 1, 2, 4 or 8 bytes, big-endian
    unsigned), ``max_frame`` (the largest payload accepted), ``blocking`` (see the module).

    Errors: a frame declared longer than ``max_frame`` closes the connection with a warning
    log line (the protocol has no way to say why); an exception from ``handle_frame`` is
    logged with its traceback and closes that connection only; a reply too long for the
    header is such an exception; a client that closes mid-frame is logged at debug level.
    """

    header: ClassVar[int] = 4
    max_frame: ClassVar[int] = MAX_FRAME
    _ns_method: ClassVar[str] = "handle_frame"

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.header not in _HEADERS:
            raise ConfigError(f"{cls.__qualname__}.header: expected 1, 2, 4 or 8 bytes")
        if not isinstance(cls.max_frame, int) or cls.max_frame < 1:
            raise ConfigError(f"{cls.__qualname__}.max_frame: must be at least 1")

    def handle_frame(self, frame: bytes) -> bytes | None:
        """Return the reply to *frame* (sent as a frame), or None to send nothing. The default
        sends nothing."""
        return None

    def data_received(self, data: bytes) -> None:
        self._ns_idle = 0
        header = self.header
        # the fast path: the read is exactly one whole frame and nothing is pending
        if (
            self._ns_framer is None
            and len(data) >= header
            and self._ns_state == OPEN
            and not self.blocking
        ):
            (length,) = _HEADERS[header].unpack_from(data)
            if length + header == len(data) and length <= self.max_frame:
                try:
                    reply = self._ns_respond(data[header:])
                except Exception:
                    log_handler_error(self, "handle_frame")
                    self._ns_close()
                    return
                if reply is not None:
                    self._ns_transport.write(reply)
                if self._ns_close_requested:
                    self._ns_close()
                return
        self._ns_received(data)

    def _ns_new_framer(self) -> Framer:
        return LengthPrefixedFramer(self.max_frame, self.header)

    def _ns_respond(self, message: bytes) -> bytes | None:
        reply = self.handle_frame(message)
        if reply is None:
            return None
        # the length in bytes: len() of an array or a memoryview counts its items
        size = len(reply) if type(reply) is bytes else memoryview(reply).nbytes
        try:
            return _HEADERS[self.header].pack(size) + reply
        except struct.error:
            raise ValueError(
                f"reply of {size} bytes is too long for a {self.header}-byte length header"
            ) from None
