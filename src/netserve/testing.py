"""Helpers for testing servers: run one in a background thread for the length of a block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._server import BaseServer

__all__ = ["run_server"]

#: How long leaving ``run_server`` waits for the serving thread: shutdown() is immediate, so
#: only a handler stuck in the serving thread can take this long.
STOP_TIMEOUT = 10.0


@contextmanager
def run_server(server: BaseServer, poll_interval: float = 0.5) -> Iterator[Any]:
    """Serve *server* in a daemon thread; yield its bound address (port 0 resolved).

    The server is bound and listening when constructed, so clients may connect as soon as the
    address is yielded. On exit the server is shut down and closed, also after an error; a
    serving thread that does not stop within ``STOP_TIMEOUT`` raises ``RuntimeError``.
    """
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=f"netserve test server {server!r}",
        daemon=True,
    )
    thread.start()
    try:
        yield server.server_address
    finally:
        server.shutdown()
        thread.join(STOP_TIMEOUT)
        server.server_close()
        if thread.is_alive():
            raise RuntimeError(f"{server!r} did not stop within {STOP_TIMEOUT} s")
