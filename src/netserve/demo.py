"""The reverse-string demo handlers.

``ReverseHandler`` speaks the line protocol of the benchmark: each line the client sends is
answered with the line reversed (without its ``\\n``) plus ``\\n``, until the client closes.
``SeedHandler`` is the classic first example: one ``recv(1024)``, the bytes sent back
reversed, done.
"""

from __future__ import annotations

from ._handlers import BaseRequestHandler, StreamRequestHandler

__all__ = ["ReverseHandler", "SeedHandler"]


class ReverseHandler(StreamRequestHandler):
    """Reply to every line with the line reversed; close when the client does."""

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
