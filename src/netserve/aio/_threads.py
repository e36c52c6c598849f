"""The bounded set of threads that runs blocking message handlers for the event loop.

The loop holds every connection; only the calls into a ``blocking = True`` handler
(``setup``, ``handle_line``/``handle_frame``, ``finish``) run here, so ten thousand
connections need only as many threads as requests that block at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from .._errors import ConfigError
from .._log import logger

__all__ = ["BlockingPool"]

_Job = tuple[Callable[[Any], object], Any]


class BlockingPool:
    """*threads* daemon threads, started up front, taking jobs from one unbounded queue.

    The queue needs no bound of its own: a connection has at most one job queued or running
    at a time, so it holds at most one job per connection. Jobs handle their own errors; one
    that escapes is logged with its traceback and the thread goes on. ``close()`` lets the
    threads end once the jobs queued before it are done; the threads are daemons, so one
    stuck in a handler never keeps the process alive.
    """

    __slots__ = ("_closed", "_queue", "_threads")

    def __init__(self, threads: int, name: str = "netserve-aio") -> None:
        if threads < 1:
            raise ConfigError(f"threads: blocking handlers need at least 1, got {threads}")
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> int:
        """How many threads the pool started."""
        return len(self._threads)

    def submit(self, job: Callable[[Any], object], arg: Any) -> None:
        """Run ``job(arg)`` in a pool thread; RuntimeError once the pool is closed."""
        if self._closed:
            raise RuntimeError("submit() after close()")
        self._queue.put((job, arg))

    def close(self) -> None:
        """Let every thread end after the jobs already queued; does not wait. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds in all for the threads to end (after ``close()``);
        True if they all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        get = self._queue.get
        while (item := get()) is not None:
            job, arg = item
            try:
                job(arg)
            except BaseException:
                logger.exception("a blocking handler job escaped its error handling")
            del item, job, arg  # drop the connection before waiting for the next job
