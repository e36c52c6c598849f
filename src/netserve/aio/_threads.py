"""The bounded sets of threads the event-loop server runs blocking calls in.

``BlockingPool`` runs blocking message handlers: the loop holds every connection; only the
calls into a ``blocking = True`` handler (``setup``, ``handle_line``/``handle_frame``,
``finish``) run there, so ten thousand connections need only as many threads as requests
that block at the same time. ``DaemonExecutor`` is the default executor of the loops
``AsyncServer.serve()`` makes (``asyncio.to_thread``, ``run_in_executor(None, ...)``).
Both use daemon threads and wait a bounded time for them: a call stuck in a thread never
keeps a stopped server's process alive.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any, Final, ParamSpec, TypeVar

from .._errors import ConfigError
from .._log import logger

__all__ = ["DEFAULT_EXECUTOR_THREADS", "BlockingPool", "DaemonExecutor"]

#: The most threads a ``DaemonExecutor`` runs at once by default: what asyncio's own default
#: executor allows (``ThreadPoolExecutor``'s default: the CPUs this process may use, from
#: 3.13), so that moving to it changes no limit.
DEFAULT_EXECUTOR_THREADS: Final = min(
    32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4
)

_Job = tuple[Callable[[Any], object], Any]
_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _join_all(threads: list[threading.Thread], timeout: float) -> int:
    """Wait up to *timeout* seconds in all for *threads* to end; return how many did not."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(1 for thread in threads if thread.is_alive())


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
        return _join_all(self._threads, timeout) == 0

    def _work(self) -> None:
        get = self._queue.get
        while (item := get()) is not None:
            job, arg = item
            try:
                job(arg)
            except BaseException:
                logger.exception("a blocking handler job escaped its error handling")
            del item, job, arg  # drop the connection before waiting for the next job


class DaemonExecutor(ThreadPoolExecutor):
    """A default executor for an event loop whose threads cannot keep the process alive.

    As asyncio's own default executor: at most *max_workers* threads, started as calls need
    them and reused once idle. Unlike it, the threads are daemons (the interpreter does not
    join them at exit), and ``shutdown(wait=True)``, which closing the loop calls, waits at
    most *join_timeout* seconds: calls still running then are left to finish in their
    threads, and a warning says how many. Calls queued before ``shutdown()`` still run
    (unless *cancel_futures*); ``submit()`` after it raises RuntimeError. A call's error is
    set on its future, as ``ThreadPoolExecutor`` does. Dropped without ``shutdown()``, its
    idle threads end, as a ``ThreadPoolExecutor``'s do.

    It subclasses ``ThreadPoolExecutor`` only because asyncio's ``set_default_executor()``
    requires one; none of the base class's threads or queues are used.
    """

    def __init__(
        self,
        join_timeout: float,
        max_workers: int = DEFAULT_EXECUTOR_THREADS,
        name: str = "netserve-aio-executor",
    ) -> None:
        if max_workers < 1:
            raise ConfigError(f"max_workers: must be at least 1, got {max_workers}")
        super().__init__(max_workers, name)
        self._join_timeout = join_timeout
        self._name = name
        self._most = max_workers
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._idle_threads = threading.Semaphore(0)  # released by each thread between calls
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()  # guards _closed and _started
        self._closed = False
        # the threads hold no reference to the executor: once it is dropped, they end
        weakref.finalize(self, _end_threads, self._calls, self._started)

    @property
    def threads(self) -> int:
        """How many threads have been started so far (never more than *max_workers*)."""
        return len(self._started)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` in a thread; RuntimeError after ``shutdown()``."""
        future: Future[_T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._calls.put((future, fn, args, kwargs))
            if not self._idle_threads.acquire(blocking=False) and len(self._started) < self._most:
                self._start_thread()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the threads end once the calls queued are done; with *wait*, wait for them
        for at most *join_timeout* seconds, then log a warning naming how many calls are
        still running and leave them. With *cancel_futures*, calls not started yet are
        cancelled instead of run. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    self._cancel_queued()
                for _ in self._started:
                    self._calls.put(None)
            threads = list(self._started)
        if wait:
            running = _join_all(threads, self._join_timeout)
            if running:
                logger.warning(
                    "calls still running in the event loop's default executor "
                    "(asyncio.to_thread, run_in_executor) %g s after the loop stopped: %d; "
                    "leaving them to their daemon threads",
                    self._join_timeout,
                    running,
                )

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=_work,
            args=(self._calls, self._idle_threads),
            name=f"{self._name}-{len(self._started)}",
            daemon=True,
        )
        thread.start()
        self._started.append(thread)

    def _cancel_queued(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except Empty:
                return
            if call is not None:
                call[0].cancel()


def _work(calls: SimpleQueue[_Call | None], idle_threads: threading.Semaphore) -> None:
    """A ``DaemonExecutor`` thread: run calls until told to end (None)."""
    get = calls.get
    while (call := get()) is not None:
        _run_call(call)
        del call  # hold nothing of a call while idle
        idle_threads.release()


def _end_threads(calls: SimpleQueue[_Call | None], started: list[threading.Thread]) -> None:
    for _ in started:
        calls.put(None)


def _run_call(call: _Call) -> None:
    """Run a call unless its future was cancelled, and set its outcome on the future."""
    future, fn, args, kwargs = call
    del call
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
        # the traceback holds this frame: drop the arguments, or they live until a GC
        del future, fn, args, kwargs, exc
    else:
        future.set_result(result)
