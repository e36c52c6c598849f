"""A thread per request: the ``ThreadingMixIn`` model, without keeping finished threads."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from ._base import start_afresh_in_forked_children

__all__ = ["ThreadPerRequest"]


class ThreadPerRequest:
    """Starts one thread per request and forgets it as soon as it ends.

    *daemon* is asked at each ``submit`` whether the new thread is a daemon thread (so a
    server's ``daemon_threads`` can change at any time, as in the standard library). An
    exception that escapes ``serve`` goes to ``threading.excepthook`` as in any thread.
    ``drain`` waits for the non-daemon threads only, as ``server_close()`` does in the
    standard library: daemon threads are by definition not waited for, unless
    *drain_daemon_threads* (daemon threads that a graceful stop still lets finish), or
    when called within ``draining_daemon_threads()`` by the same thread.
    """

    def __init__(
        self, daemon: Callable[[], bool] = lambda: False, *, drain_daemon_threads: bool = False
    ) -> None:
        self._daemon = daemon
        self._drain_daemon_threads = drain_daemon_threads
        # per thread: a drain in a background thread must not change another's
        self._draining_daemons_here = threading.local()
        self._start_afresh()
        start_afresh_in_forked_children(self)

    def _start_afresh(self) -> None:
        """No thread yet: how it begins, and how a forked child finds it (the threads
        stayed in the parent; the lock may have been held there)."""
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._live: set[threading.Thread] = set()

    @contextlib.contextmanager
    def draining_daemon_threads(self) -> Iterator[None]:
        """Within the block, ``drain`` called by this thread waits for daemon threads too."""
        here = self._draining_daemons_here
        before = getattr(here, "on", False)
        here.on = True
        try:
            yield
        finally:
            here.on = before

    @property
    def live_threads(self) -> list[threading.Thread]:
        """The threads serving a request right now."""
        with self._lock:
            return list(self._live)

    def submit(self, request: object, serve: Callable[[], object]) -> bool:
        """Start a thread running ``serve()``, named as ``threading`` names it after its
        target: ``Thread-N (name of serve)``."""

        def run() -> None:
            self._run(serve)

        run.__name__ = getattr(serve, "__name__", "run")
        thread = threading.Thread(target=run, daemon=self._daemon())
        with self._lock:
            self._live.add(thread)
        try:
            thread.start()
        except BaseException:
            self._forget(thread)
            raise
        return True

    def _run(self, serve: Callable[[], object]) -> None:
        try:
            serve()
        finally:
            self._forget(threading.current_thread())

    def _forget(self, thread: threading.Thread) -> None:
        with self._lock:
            self._live.discard(thread)
            self._all_done.notify_all()

    def _waited_for(self) -> bool:
        """Whether a thread that drain() waits for is alive: not daemon threads (unless
        asked), and never the calling thread (a handler closing its own server)."""
        me = threading.current_thread()
        if self._drain_daemon_threads or getattr(self._draining_daemons_here, "on", False):
            return any(thread is not me for thread in self._live)
        return any(not thread.daemon and thread is not me for thread in self._live)

    def has_capacity(self) -> bool:
        return True

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Never called: this strategy is never full."""

    def recheck_after(self) -> float | None:
        return None

    def drain(self, deadline: float | None) -> bool:
        with self._lock:
            while self._waited_for():
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return False
                self._all_done.wait(timeout)
            return True

    def close(self) -> None:
        """Nothing to release: threads still serving finish on their own."""
