"""A bounded pool of threads started up front: the alternative the socketserver docs suggest.

``max_workers`` threads serve requests; up to ``max_queued`` more wait in a queue. Past that,
the overflow policy decides: ``"reject"`` makes ``submit`` return False at once (the server
then refuses the connection), ``"wait"`` reports no capacity, so the server stops accepting
and the kernel's backlog holds the rest until a worker is free.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, get_args

from .._errors import ConfigError
from .._log import logger

__all__ = ["Overflow", "ThreadPool"]

Overflow = Literal["reject", "wait"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)

#: How long ``close()`` waits for each idle worker thread to notice and end.
_WORKER_JOIN_TIMEOUT = 1.0


class ThreadPool:
    """A fixed set of worker threads and a bounded queue of requests waiting for them.

    The threads start in the constructor, so create the pool in the process that serves.
    ``serve`` callables are expected to handle their own errors; anything that escapes one is
    logged and the worker thread goes on serving.
    """

    def __init__(
        self,
        max_workers: int = 32,
        max_queued: int = 64,
        overflow: Overflow = "reject",
        *,
        pause_when_busy: bool = False,
    ) -> None:
        if max_workers < 1:
            raise ConfigError(f"max_workers: must be at least 1, got {max_workers}")
        if max_queued < 0:
            raise ConfigError(f"max_queued: must be 0 or more, got {max_queued}")
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"overflow: expected one of {OVERFLOW_POLICIES}, got {overflow!r}")
        self.max_workers = max_workers
        self.max_queued = max_queued
        self.overflow: Overflow = overflow
        self.pause_when_busy = pause_when_busy
        self._lock = threading.Lock()
        # two conditions on one lock, so that a new request wakes one idle worker rather than
        # all of them, and a finished one wakes only drain() and waiting submit() calls
        self._work_queued = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Callable[[], object]] = deque()
        self._busy = 0
        self._closing = False
        self._capacity_callback: Callable[[], None] = lambda: None
        self._threads = [
            threading.Thread(target=self._work, name=f"netserve-pool-{n}", daemon=True)
            for n in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def in_flight(self) -> int:
        """Requests being served or waiting in the queue."""
        with self._lock:
            return self._busy + len(self._queue)

    def _full(self) -> bool:
        return self._busy + len(self._queue) >= self.max_workers + self.max_queued

    def _room_for_one_more(self) -> bool:
        """What ``has_capacity`` answers; the caller holds the lock."""
        in_flight = self._busy + len(self._queue)
        if self.pause_when_busy and in_flight >= self.max_workers:
            return False
        return self.overflow != "wait" or not self._full()

    def has_capacity(self) -> bool:
        """False while the server should not accept: a ``"wait"`` pool is full, or, with
        *pause_when_busy*, no thread is idle (in a pre-forked worker, so that a busy worker
        leaves new connections to idle ones; the queue then only absorbs races)."""
        with self._lock:
            return self._room_for_one_more()

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Call *callback* (from a worker thread) when a pool that had no capacity gets some."""
        self._capacity_callback = callback

    def submit(self, request: object, serve: Callable[[], object]) -> bool:
        """Queue ``serve``; False if the pool is closed, or full with overflow ``"reject"``.

        With overflow ``"wait"``, a full pool makes this wait for room.
        """
        with self._lock:
            while self._full() and self.overflow == "wait" and not self._closing:
                self._changed.wait()
            if self._closing or self._full():
                return False
            self._queue.append(serve)
            self._work_queued.notify()
            return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._work_queued.wait()
                if not self._queue:
                    return
                serve = self._queue.popleft()
                self._busy += 1
            try:
                serve()
            except BaseException:
                logger.exception("a request escaped its error handling; the worker goes on")
            finally:
                with self._lock:
                    room_came_back = not self._room_for_one_more()
                    self._busy -= 1
                    self._changed.notify_all()
            if room_came_back:
                self._capacity_callback()

    def drain(self, deadline: float | None) -> bool:
        with self._lock:
            while self._busy or self._queue:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return False
                self._changed.wait(timeout)
            return True

    def close(self) -> None:
        """Stop the workers once the queue is empty; wait briefly for the idle ones to end.

        Requests still queued are served first; a worker stuck in a request is left to finish
        (the threads are daemons, so they never keep the process alive).
        """
        with self._lock:
            self._closing = True
            self._work_queued.notify_all()
            self._changed.notify_all()
        deadline = time.monotonic() + _WORKER_JOIN_TIMEOUT
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
