"""Length-prefixed frames: a big-endian unsigned length of 1, 2, 4 or 8 bytes, then as many
bytes of payload; each frame is one payload.

Frames that lie whole in a chunk are sliced straight out of it, one ``unpack_from`` per frame;
only a frame that spans chunks is assembled, in a bytearray that grows as its bytes arrive
(never allocated up front from the declared length, which the peer chooses).
"""

from __future__ import annotations

import struct
from typing import Final

from .._errors import ConfigError
from ._events import FrameTooLargeError
from ._framer import Framer

__all__ = ["DEFAULT_MAX_FRAME", "LengthPrefixedFramer"]

#: The largest payload accepted by default: 16 MiB. A frame is held whole in memory before it
#: is returned, so this bounds what one connection can make the server hold. 16 MiB is the
#: largest frame HTTP/2 allows (2**24 - 1) and four times gRPC's default message limit: room
#: for real RPC payloads, while a server with many connections should lower it (its worst case
#: is max_connections * max_frame).
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024

#: The header sizes supported, in bytes, and their ``struct`` formats (big-endian unsigned).
_HEADER_FORMATS: Final = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


class LengthPrefixedFramer(Framer):
    """Split a byte stream into length-prefixed frames; each frame is one payload.

    A declared length over *max_frame* poisons the framer with ``FrameTooLargeError`` as soon
    as the header is in, before any of the payload is held; so the unfinished frame held never
    exceeds ``header + max_frame - 1`` bytes. A *max_frame* beyond what the header can express
    (``2**(8*header) - 1``) is lowered to that, so every header size works with the default.
    At EOF, an unfinished frame raises ``IncompleteFrameError``, whose ``data`` is the header
    and payload received of it. Zero-length frames are valid (``b""``).
    """

    __slots__ = ("_body", "_head", "_header", "_length", "_max_frame", "_struct")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, header: int = 4) -> None:
        if header not in _HEADER_FORMATS:
            raise ConfigError(f"header: expected 1, 2, 4 or 8 bytes, got {header!r}")
        if max_frame < 1:
            raise ConfigError(f"max_frame: must be at least 1, got {max_frame}")
        super().__init__()
        self._header = header
        self._max_frame = min(max_frame, (1 << 8 * header) - 1)
        self._struct = struct.Struct(_HEADER_FORMATS[header])
        self._head = bytearray()  # the start of a header that spans chunks
        self._length = -1  # the payload length of the unfinished frame, once its header is in
        self._body = bytearray()  # the payload received of the unfinished frame

    @property
    def max_frame(self) -> int:
        """The largest payload accepted, in bytes."""
        return self._max_frame

    @property
    def header(self) -> int:
        """The size of the length header, in bytes."""
        return self._header

    def encode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """The frame that carries *payload*: its length header, then the payload.

        Raises ValueError for a payload longer than ``max_frame``: it is this program's
        mistake, not the peer's, so it is not a ``ProtocolError``.
        """
        size = payload.nbytes if type(payload) is memoryview else len(payload)
        if size > self._max_frame:
            raise ValueError(
                f"payload of {size} bytes is longer than max_frame ({self._max_frame} bytes)"
            )
        return self._struct.pack(size) + payload

    def frames(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        # the hot path inlined: nothing pending and a chunk that is exactly one frame within
        # the limit is one unpack and one slice; anything else takes the general path
        if not (
            self._head
            or self._length >= 0
            or self._ready
            or self._error is not None
            or self._eof
            or type(data) is not bytes
            or len(data) < self._header
        ):
            header = self._header
            (length,) = self._struct.unpack_from(data)
            if length + header == len(data) and length <= self._max_frame:
                return [data[header:]]
        return super().frames(data)

    def _parse(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        start = 0
        if self._head or self._length >= 0:
            start = self._resume(data, frames)
            if start < 0:
                return frames
        size = len(data)
        header = self._header
        limit = self._max_frame
        unpack_from = self._struct.unpack_from
        while True:
            body = start + header
            if body > size:
                break
            (length,) = unpack_from(data, start)
            if length > limit:
                self._refuse(length)
                return frames
            end = body + length
            if end > size:
                self._length = length
                self._body += memoryview(data)[body:]
                return frames
            frames.append(data[body:end])
            start = end
        if start < size:
            self._head += data[start:]
        return frames

    def _resume(self, data: bytes, frames: list[bytes]) -> int:
        """Continue the frame that spans chunks; return where the rest of *data* starts, or -1
        if *data* ended first (or the header just completed declares too long a frame)."""
        start = 0
        if self._length < 0:
            head = self._head
            start = self._header - len(head)
            head += data[:start]
            if len(head) < self._header:
                return -1
            (length,) = self._struct.unpack_from(head)
            head.clear()
            if length > self._max_frame:
                self._refuse(length)
                return -1
            self._length = length
        body = self._body
        missing = self._length - len(body)
        if len(data) - start < missing:
            body += memoryview(data)[start:]
            return -1
        end = start + missing
        frames.append(b"".join((body, memoryview(data)[start:end])))
        body.clear()
        self._length = -1
        return end

    def _refuse(self, length: int) -> None:
        limit = self._max_frame
        message = f"frame of {length} bytes is longer than max_frame ({limit} bytes)"
        self._fail(FrameTooLargeError(message, length, limit))

    def _partial_size(self) -> int:
        if self._length >= 0:
            return self._header + len(self._body)
        return len(self._head)

    def _take_partial(self) -> bytes:
        if self._length >= 0:
            received = self._struct.pack(self._length) + self._body
        else:
            received = bytes(self._head)
        self._head.clear()
        self._body.clear()
        self._length = -1
        return received

    def _incomplete_message(self) -> str:
        if self._length >= 0:
            return (
                f"connection closed in the middle of a frame "
                f"({len(self._body)} of {self._length} payload bytes received)"
            )
        return (
            f"connection closed in the middle of a frame header "
            f"({len(self._head)} of {self._header} bytes received)"
        )
