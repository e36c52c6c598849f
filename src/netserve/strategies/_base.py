"""The one small interface every concurrency strategy implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["ConcurrencyStrategy"]


class ConcurrencyStrategy(Protocol):
    """How an accepted request runs: inline, in a thread, in a forked child, in a pool.

    The server hands each request to ``submit`` with a callable that serves it completely
    (runs the handler, reports errors, closes the request); the strategy decides where and
    when that callable runs. Strategies know nothing of sockets or signals.
    """

    def submit(self, request: object, serve: Callable[[], object]) -> None:
        """Arrange for ``serve()`` to run for *request*."""

    def drain(self, deadline: float | None) -> bool:
        """Wait until every submitted request is done, or until the ``time.monotonic()``
        *deadline* (None: no deadline). True if nothing is left in flight."""

    def close(self) -> None:
        """Release what the strategy holds; requests still in flight are left to finish."""
