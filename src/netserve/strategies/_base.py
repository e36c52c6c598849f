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

    def submit(self, request: object, serve: Callable[[], object]) -> bool:
        """Arrange for ``serve()`` to run for *request*; False if the strategy has no room
        for it (``serve`` will not run; the caller refuses the request)."""

    def has_capacity(self) -> bool:
        """False while the server should stop accepting (the strategy is full and waits)."""

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Have *callback* called, from any thread, whenever capacity may have come back."""

    def recheck_after(self) -> float | None:
        """After ``has_capacity()`` said False: in how many seconds to ask again, when the
        answer depends on something no callback reports (other processes); None when
        ``on_capacity`` callbacks cover it."""

    def drain(self, deadline: float | None) -> bool:
        """Wait until every submitted request is done, or until the ``time.monotonic()``
        *deadline* (None: no deadline). True if nothing is left in flight."""

    def close(self) -> None:
        """Release what the strategy holds; requests still in flight are left to finish."""
