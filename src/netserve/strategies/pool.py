"""A bounded pool of threads started up front: the alternative the socketserver docs suggest.

``max_workers`` threads serve requests; up to ``max_queued`` more wait in a queue. Past that,
the overflow policy decides: ``"reject"`` makes ``submit`` return False at once (the server
then refuses the connection), ``"wait"`` reports no capacity, so the server stops accepting
and the kernel's backlog holds the rest until a worker is free.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol, get_args

from .._errors import ConfigError
from .._log import RateLimitedLog, logger
from ..config import DEFAULT_MAX_QUEUED, DEFAULT_THREADS
from ._base import start_afresh_in_forked_children

__all__ = ["SATURATION_LOG_INTERVAL", "LoadShare", "Overflow", "ThreadPool"]

#: A pool with every thread busy and requests waiting says so at most this often: often
#: enough to be seen next to the slow clients, rarely enough not to flood a loaded server.
SATURATION_LOG_INTERVAL = 10.0


class LoadShare(Protocol):
    """A process's share of the connections of several (a pre-forked worker's
    ``AcceptBalance``): told of each connection opened and closed, asked before accepting."""

    recheck_interval: float

    def set_room(self, key: int, room: bool) -> None: ...

    def opened(self) -> None: ...

    def closed(self) -> None: ...

    def allows(self) -> bool: ...


Overflow = Literal["reject", "wait"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)

#: How long ``close()`` waits for each idle worker thread to notice and end.
_WORKER_JOIN_TIMEOUT = 1.0


class ThreadPool:
    """A fixed set of worker threads and a bounded queue of requests waiting for them.

    The threads start in the constructor. A process forked afterwards (a server made before
    daemonizing, say) finds the pool empty, with no threads, and starts them at its first
    request. ``serve`` callables are expected to handle their own errors; anything that
    escapes one is logged and the worker thread goes on serving.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_THREADS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        overflow: Overflow = "reject",
        *,
        pause_when_busy: bool = False,
        share: LoadShare | None = None,
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
        #: Asked before accepting, told of each request (see ``has_capacity``).
        self.share = share
        self._declined_by_share = False
        self._room_shared = True  # what the share was last told of this pool's room
        self._closing = False
        self._capacity_callbacks: list[Callable[[], None]] = []
        self._saturation_log = RateLimitedLog(SATURATION_LOG_INTERVAL)
        self._start_afresh()
        self._start_threads()
        start_afresh_in_forked_children(self)

    def _start_afresh(self) -> None:
        """No request in flight and no thread: how a pool begins, and how a forked child
        finds it (the threads stayed in the parent; the locks may have been held there)."""
        self._lock = threading.Lock()  # guards the counts below; never held while waiting
        # drain() and a waiting submit() wait on this; it is notified only when one waits
        self._changed = threading.Condition(self._lock)
        self._watchers = 0
        # the hand-off itself: a C queue wakes exactly one idle worker, with no Python lock
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._queued = 0
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._serving_here = threading.local()  # .on while a worker thread runs a request

    def _start_threads(self) -> None:
        """Start the threads unless they are started (in a forked child, two servers sharing
        the pool may both ask at their first request) or the pool is closed.

        If the system refuses a thread (too many for its limits), the ones started end, the
        pool is closed, and ``ConfigError`` says how many started."""
        with self._lock:
            if self._threads or self._closing:
                return
            self._threads = [
                threading.Thread(target=self._work, name=f"netserve-pool-{n}", daemon=True)
                for n in range(self.max_workers)
            ]
        for started, thread in enumerate(self._threads):
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                self._threads = self._threads[:started]
                self.close()
                raise ConfigError(
                    f"cannot start {self.max_workers} threads (max_workers, --threads): the "
                    f"system refused one after {started} ({exc}); ask for fewer"
                ) from None

    @property
    def in_flight(self) -> int:
        """Requests being served or waiting in the queue."""
        with self._lock:
            return self._busy + self._queued

    def _full(self) -> bool:
        return self._busy + self._queued >= self.max_workers + self.max_queued

    def _room_for_one_more(self) -> bool:
        """Whether the pool itself has room to accept; the caller holds the lock."""
        in_flight = self._busy + self._queued
        if self.pause_when_busy and in_flight >= self.max_workers:
            return False
        return self.overflow != "wait" or not self._full()

    def has_capacity(self) -> bool:
        """False while the server should not accept: a ``"wait"`` pool is full, or, with
        *pause_when_busy*, no thread is idle (in a pre-forked worker, so that a busy worker
        leaves new connections to idle ones; the queue then only absorbs races), or while
        the *share* says other processes should take the next connection."""
        with self._lock:
            room = self._room_for_one_more()
        share = self.share
        if share is None:
            return room
        if room != self._room_shared:
            self._room_shared = room
            share.set_room(id(self), room)
        # what recheck_after() answers goes with the last answer given here
        self._declined_by_share = room and not share.allows()
        return room and not self._declined_by_share

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Call *callback* (from a worker thread) when a pool that had no capacity gets some;
        each server sharing the pool registers its own."""
        self._capacity_callbacks.append(callback)

    def recheck_after(self) -> float | None:
        """When the *share* declined: its recheck interval (other processes' counts come
        with no callback)."""
        share = self.share
        return share.recheck_interval if share is not None and self._declined_by_share else None

    def submit(self, request: object, serve: Callable[[], object]) -> bool:
        """Queue ``serve``; False if the pool is closed, or full with overflow ``"reject"``.

        With overflow ``"wait"``, a full pool makes this wait for room.
        """
        if not self._threads:  # in a child forked since: start them, once
            self._start_threads()
        with self._lock:
            while self._full() and self.overflow == "wait" and not self._closing:
                self._wait_for_change(None)
            if self._closing or self._full():
                return False
            self._queued += 1
            waiting = self._busy + self._queued - self.max_workers
        if self.share is not None:
            self.share.opened()
        self._jobs.put(serve)
        if waiting > 0:
            self._saturation_log.log(
                logging.WARNING,
                "saturated",
                "all %d threads are busy; requests waiting for one: %d (a thread serves "
                "one connection until it closes: raise threads, or serve many long-lived "
                "connections with an event-loop handler)",
                self.max_workers,
                waiting,
            )
        return True

    def _wait_for_change(self, timeout: float | None) -> None:
        """Wait until a request finishes (or *timeout*); the caller holds the lock."""
        self._watchers += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._watchers -= 1

    def _work(self) -> None:
        while True:
            serve = self._jobs.get()
            if serve is None:
                return
            with self._lock:
                self._queued -= 1
                self._busy += 1
            self._serving_here.on = True
            try:
                serve()
            except BaseException:
                logger.exception("a request escaped its error handling; the worker goes on")
            finally:
                self._serving_here.on = False
                with self._lock:
                    room_came_back = not self._room_for_one_more()
                    self._busy -= 1
                    if self._watchers:
                        self._changed.notify_all()
                if self.share is not None:
                    self.share.closed()
                    # fewer connections here: the share may allow one more now
                    room_came_back = room_came_back or self._declined_by_share
            if room_came_back:
                for callback in self._capacity_callbacks:
                    callback()

    def drain(self, deadline: float | None) -> bool:
        """Wait for the requests in flight. Called from a worker (a handler that closes its
        server), not for its own request, and not for queued ones once no other worker is
        busy: only the caller's thread could run them (it does, once its request ends)."""
        own = 1 if getattr(self._serving_here, "on", False) else 0
        with self._lock:
            while self._busy - own or (self._queued and not own):
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return False
                self._wait_for_change(timeout)
            return True

    def close(self) -> None:
        """Stop the workers once the queue is empty; wait briefly for the idle ones to end.

        Requests still queued are served first; a worker stuck in a request is left to finish
        (the threads are daemons, so they never keep the process alive).
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
            idle = not self._busy and not self._queued
        for _ in self._threads:
            self._jobs.put(None)  # after what is queued: each worker ends on one
        if not idle:
            return  # a worker still serving is left to finish (a fast stop does not wait)
        deadline = time.monotonic() + _WORKER_JOIN_TIMEOUT
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
