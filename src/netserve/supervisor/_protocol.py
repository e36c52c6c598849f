"""What a worker tells its supervisor: its exit status, and messages on its own pipe.

Each worker holds the write end of one pipe; the supervisor reads the other end. A message is
one tag byte, except a boot error, which carries its text: ``E``, a 2-byte big-endian length,
then UTF-8. Every message is written with one ``write()`` of at most ``PIPE_BUF`` bytes, so
the kernel never interleaves or splits it, whichever thread of the worker writes.
"""

from __future__ import annotations

import select
from dataclasses import dataclass

__all__ = [
    "BOOT_ERROR",
    "EXIT_BOOT_ERROR",
    "EXIT_CRASH",
    "EXIT_OK",
    "HEARTBEAT",
    "READY",
    "STOPPING",
    "Message",
    "MessageReader",
    "encode_boot_error",
]

#: The target returned: the worker stopped because it was asked to.
EXIT_OK = 0
#: An exception other than ImportError escaped the target (the worker logged its traceback).
EXIT_CRASH = 1
#: The target raised ImportError: the code cannot load, and restarting would only loop, so the
#: supervisor stops. 3 is gunicorn's WORKER_BOOT_ERROR, which process managers already know.
EXIT_BOOT_ERROR = 3

#: "I am alive": sent by ``Worker.notify()`` at most once per heartbeat interval.
HEARTBEAT = b"."
#: "I am serving": sent once by ``Worker.ready()``.
READY = b"R"
#: "I am stopping on my own" (max_requests): the supervisor starts a replacement at once.
STOPPING = b"S"
#: "The target could not be imported", followed by the length and the text of the error.
BOOT_ERROR = b"E"

_LENGTH_BYTES = 2
#: The longest boot error text sent: tag and length included, the message fits in PIPE_BUF, so
#: it is written atomically (POSIX guarantees at least 512 bytes; Linux has 4096).
MAX_BOOT_ERROR_BYTES = getattr(select, "PIPE_BUF", 512) - 1 - _LENGTH_BYTES


@dataclass(frozen=True)
class Message:
    """One message read from a worker's pipe: its tag, and its text for a boot error."""

    kind: bytes
    text: str = ""


def encode_boot_error(text: str) -> bytes:
    """The boot error message for *text*, cut to ``MAX_BOOT_ERROR_BYTES`` of UTF-8 (at a
    character boundary)."""
    data = text.encode("utf-8", errors="replace")[:MAX_BOOT_ERROR_BYTES]
    data = data.decode("utf-8", errors="ignore").encode("utf-8")  # no half character at the end
    return BOOT_ERROR + len(data).to_bytes(_LENGTH_BYTES, "big") + data


class MessageReader:
    """Turns the bytes read from one worker's pipe into messages.

    A boot error cut between two reads is kept until the rest arrives. Bytes that are no known
    tag are dropped: a worker's pipe carries nothing else, so they can only be noise.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add *data*; return the messages it completes, in order."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        while buffer:
            kind = bytes(buffer[:1])
            if kind != BOOT_ERROR:
                del buffer[:1]
                if kind in (HEARTBEAT, READY, STOPPING):
                    messages.append(Message(kind))
                continue
            header = 1 + _LENGTH_BYTES
            if len(buffer) < header:
                break
            end = header + int.from_bytes(buffer[1:header], "big")
            if len(buffer) < end:
                break
            messages.append(Message(kind, buffer[header:end].decode("utf-8", errors="replace")))
            del buffer[:end]
        return messages
