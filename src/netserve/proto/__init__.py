"""Sans-IO framing: bytes in, frames out; no sockets, threads or time.

A framer is fed the bytes a connection receives and hands back complete frames as ``bytes``::

    framer = LineFramer()
    for line in framer.frames(data):      # one call per read: every complete line
        ...
    framer.feed_eof()                      # when the peer closes
    framer.next_event()                    # EOF, or IncompleteFrameError if it closed mid-line

or, h11-style, ``feed(data)`` then ``next_event()`` until it returns ``NEED_DATA``. A peer that
breaks the framing (a frame over the limit, a close mid-frame) gets a ``ProtocolError``
subclass, raised, after which the framer is poisoned. See ``_events`` for why frames are plain
``bytes`` and errors are raised.
"""

from ._events import (
    EOF,
    NEED_DATA,
    BadFrameError,
    Event,
    FrameTooLargeError,
    IncompleteFrameError,
    Sentinel,
)
from ._framer import Framer
from .length_prefixed import DEFAULT_MAX_FRAME, LengthPrefixedFramer
from .lines import DEFAULT_MAX_LINE, LineFramer

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "EOF",
    "NEED_DATA",
    "BadFrameError",
    "Event",
    "FrameTooLargeError",
    "Framer",
    "IncompleteFrameError",
    "LengthPrefixedFramer",
    "LineFramer",
    "Sentinel",
]
