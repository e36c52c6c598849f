"""What every framer shares: the feed/next_event/frames API, the queue of parsed frames, EOF
and the poisoned state. A framer subclass only parses.

Parsing is eager: ``feed()`` splits the data at once (in C, where it can) and queues the
complete frames; ``next_event()`` hands them out one by one; ``frames()`` skips the queue and
returns the list it just parsed, which is the fast path of a server's ``data_received``.
A framer never scans its buffer from the front again: it parses each chunk where it lies and
keeps only the unfinished frame at its end, so many small frames in one big feed cost one pass,
and a big frame trickling in costs one append per chunk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque

from .._errors import ProtocolError
from ._events import EOF, NEED_DATA, Event, IncompleteFrameError

__all__ = ["Framer"]


class Framer(ABC):
    """Bytes in, frames out, no I/O. Subclasses implement ``_parse`` and the partial-frame
    hooks; this class owns the rest.

    Errors: a bad frame poisons the framer. The frames completed before it are still returned
    (by ``next_event()``, in order), then every ``next_event()`` and ``frames()`` raises the
    same ``ProtocolError``. The unfinished frame is dropped at once, and data fed afterwards is
    ignored, so a peer that broke the protocol cannot make the framer hold more memory.
    """

    __slots__ = ("_eof", "_error", "_ready", "_ready_bytes")

    def __init__(self) -> None:
        self._ready: deque[bytes] = deque()  # parsed frames next_event() has not returned
        self._ready_bytes = 0
        self._error: ProtocolError | None = None
        self._eof = False

    # -- what a subclass implements ------------------------------------------------------

    @abstractmethod
    def _parse(self, data: bytes) -> list[bytes]:
        """Return the frames *data* completes, in order, keeping an unfinished one for later.

        On a bad frame: call ``_fail(error)`` and return the complete frames before it.
        """

    @abstractmethod
    def _partial_size(self) -> int:
        """Bytes held of the unfinished frame."""

    @abstractmethod
    def _take_partial(self) -> bytes:
        """Return the bytes of the unfinished frame and forget them."""

    @abstractmethod
    def _incomplete_message(self) -> str:
        """What ``IncompleteFrameError`` says when the peer closes mid-frame (called before
        ``_take_partial``)."""

    def _fail(self, error: ProtocolError) -> None:
        """Poison the framer with *error* and release the unfinished frame."""
        self._error = error
        self._take_partial()

    # -- the API -------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held: frames parsed but not yet returned, plus the unfinished frame
        (delimiters and length headers of complete frames are not counted)."""
        return self._ready_bytes + self._partial_size()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse *data* and queue the frames it completes for ``next_event()``.

        Never raises ``ProtocolError``: a bad frame is reported by ``next_event()``, after the
        frames before it. Empty data is no event; call ``feed_eof()`` when the peer closes.
        Raises RuntimeError after ``feed_eof()``. A poisoned framer ignores the data.
        """
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        if self._error is not None:
            return
        frames = self._parse(data if type(data) is bytes else bytes(data))
        if frames:
            self._ready.extend(frames)
            self._ready_bytes += sum(map(len, frames))

    def feed_eof(self) -> None:
        """Record that the peer closed its side; ``next_event()`` will then return the frames
        still queued and report ``EOF``, or raise ``IncompleteFrameError`` if a frame was
        left unfinished. Calling it again does nothing."""
        self._eof = True

    def next_event(self) -> Event:
        """The next frame (``bytes``), ``NEED_DATA``, or ``EOF`` once ``feed_eof()`` was called
        and nothing is left.

        Raises the framer's ``ProtocolError`` once the frames before the bad one are returned,
        and on every later call; ``IncompleteFrameError`` if the peer closed mid-frame.
        """
        ready = self._ready
        if ready:
            frame = ready.popleft()
            self._ready_bytes -= len(frame)
            return frame
        error = self._error
        if error is not None:
            raise error.with_traceback(None)  # the same exception, without stacking tracebacks
        if not self._eof:
            return NEED_DATA
        if self._partial_size():
            message = self._incomplete_message()
            self._error = error = IncompleteFrameError(message, self._take_partial())
            raise error
        return EOF

    def frames(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Feed *data* and return every frame now complete, in order (often an empty list).

        The hot path of a server: one call per read. If the data holds a bad frame, this raises
        its ``ProtocolError`` instead; the complete frames before it are not lost:
        ``next_event()`` returns them, then raises the error again. Raises at once if the framer
        is already poisoned, and RuntimeError after ``feed_eof()``.
        """
        if self._ready or self._error is not None or self._eof:
            return self._frames_slow(data)
        frames = self._parse(data if type(data) is bytes else bytes(data))
        if self._error is not None:
            self._ready.extend(frames)
            self._ready_bytes += sum(map(len, frames))
            raise self._error
        return frames

    def _frames_slow(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """``frames()`` when frames are queued (``feed()`` and ``frames()`` were mixed), the
        framer is poisoned, or EOF was fed."""
        self.feed(data)
        if self._error is not None:
            raise self._error.with_traceback(None)
        frames = list(self._ready)
        self._ready.clear()
        self._ready_bytes = 0
        return frames
