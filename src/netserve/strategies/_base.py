"""The one small interface every concurrency strategy implements."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["ConcurrencyStrategy", "ThreadStrategy", "start_afresh_in_forked_children"]


class ConcurrencyStrategy(Protocol):
    """How an accepted request runs: inline, in a thread, in a forked child, in a pool.

    The server hands each request to ``submit`` with a callable that serves it completely
    (runs the handler, reports errors, closes the request); the strategy decides where and
    when that callable runs. Strategies know nothing of sockets, and of signals only this:
    ``ForkPerRequest`` starts each child with SIGTERM at its default action, blocked across
    the fork, since only the code that forks can leave no window for the parent's handler.
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


class ThreadStrategy(Protocol):
    """A strategy whose requests run on threads: those do not survive ``fork()``."""

    def _start_afresh(self) -> None:
        """In a forked child: forget the parent's threads and requests, renew the locks."""


#: The thread strategies alive, for the fork hook below.
_thread_strategies: weakref.WeakSet[ThreadStrategy] = weakref.WeakSet()


def start_afresh_in_forked_children(strategy: ThreadStrategy) -> None:
    """Have ``strategy._start_afresh()`` called in every child this process forks (its
    threads stay in the parent, and a lock one of them held would stay held)."""
    _thread_strategies.add(strategy)


def _after_fork_in_child() -> None:
    for strategy in list(_thread_strategies):
        strategy._start_afresh()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
