"""The reverse-string demo handlers, one per kind of handler netserve serves.

``ReverseLineHandler``, ``AsyncReverseHandler`` and ``ReverseHandler`` speak the line protocol
of the benchmark: each line the client sends is answered with the line reversed (without its
``\\n``) plus ``\\n``, until the client closes. ``ReverseLineHandler`` (a message handler on
the event loop, the fastest) is what ``netserve`` serves by default. ``SeedHandler`` is the
classic first example: one ``recv(1024)``, the bytes sent back reversed, done.
"""

from __future__ import annotations

from ._handlers import BaseRequestHandler, StreamRequestHandler
from .aio import AsyncRequestHandler, LineHandler

__all__ = ["AsyncReverseHandler", "ReverseHandler", "ReverseLineHandler", "SeedHandler"]


class ReverseLineHandler(LineHandler):
    """A message handler: each line's reply is the line reversed."""

    __slots__ = ()

    def handle_line(self, line: bytes) -> bytes:
        return line[::-1]


class AsyncReverseHandler(AsyncRequestHandler):
    """A coroutine per connection: read a line, write it reversed, until EOF."""

    __slots__ = ()

    async def handle(self) -> None:
        while True:
            line = await self.readline()
            if not line.endswith(b"\n"):
                return  # EOF (or a partial last line): the client has gone
            self.write(line[-2::-1] + b"\n")


class ReverseHandler(StreamRequestHandler):
    """A thread per connection (socketserver style): reply to every line reversed."""

    disable_nagle_algorithm = True

    def handle(self) -> None:
        for line in self.rfile:
            if not line.endswith(b"\n"):
                return  # EOF in the middle of a line: the client has gone
            self.wfile.write(line[-2::-1] + b"\n")


class SeedHandler(BaseRequestHandler):
    """The classic example: read once (up to 1024 bytes) and send it back reversed.

    A trailing newline stays at the end, so line-based clients see one reversed line.
    """

    def handle(self) -> None:
        data = self.request.recv(1024)
        body = data.rstrip(b"\r\n")
        self.request.sendall(body[::-1] + data[len(body) :])
