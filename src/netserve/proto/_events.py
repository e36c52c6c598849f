"""What a framer reports: a frame (plain ``bytes``), a sentinel, or a ``ProtocolError``.

Frames are returned as ``bytes`` rather than wrapped in an event object. A wrapper would cost
an allocation and an attribute lookup per frame on the hottest path of a server, and it would
carry nothing: a framer has one kind of good news. The two other outcomes are sentinels,
compared with ``is``: ``NEED_DATA`` (feed more bytes) and ``EOF`` (the peer closed cleanly,
on a frame boundary).

Bad input is raised, not returned. A frame that breaks the protocol ends the connection, so an
exception is what the caller wants: it cannot be mistaken for a frame by code that forgot to
check, and a server's single ``except ProtocolError`` covers it. The framer then stays
poisoned: every later ``next_event()`` or ``frames()`` raises the same exception again, so a
caller that keeps reading by mistake cannot resynchronise on garbage.
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

from .._errors import ProtocolError

__all__ = [
    "EOF",
    "NEED_DATA",
    "BadFrameError",
    "Event",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "Sentinel",
]


class Sentinel(enum.Enum):
    """The two non-frame results of ``next_event()``; see ``NEED_DATA`` and ``EOF``."""

    NEED_DATA = "NEED_DATA"
    EOF = "EOF"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


#: No complete frame is buffered: feed more data (or ``feed_eof()``).
NEED_DATA: Final = Sentinel.NEED_DATA
#: ``feed_eof()`` was called and every frame has been returned; nothing was left over.
EOF: Final = Sentinel.EOF

#: What ``next_event()`` returns: one frame, or a sentinel.
Event: TypeAlias = bytes | Sentinel


class FrameTooLargeError(ProtocolError):
    """A frame is longer than the framer's limit; nothing of it is kept.

    ``size`` is the frame's length in bytes: the declared length of a length-prefixed frame,
    or, for a line whose delimiter has not arrived, the bytes received so far (a lower bound).
    ``limit`` is the framer's ``max_line`` or ``max_frame``.
    """

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message, size, limit)  # every argument in args, so it pickles
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return str(self.args[0])


class IncompleteFrameError(ProtocolError):
    """The peer closed the connection in the middle of a frame.

    ``data`` holds the bytes received of that frame (for a line: the line so far; for a
    length-prefixed frame: header and payload so far), so a lenient server may still act on
    a last line that lacks its delimiter.
    """

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message, data)
        self.data = data

    def __str__(self) -> str:
        return str(self.args[0])


class BadFrameError(ProtocolError):
    """A frame or header is malformed (for the PROXY-protocol parser; neither framer here
    raises it, since any bytes make a valid line and any length fits its header)."""
