"""A forked child process per request: the ``ForkingMixIn`` model, reaping only its own."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from .._log import logger

__all__ = ["ForkPerRequest"]

_pidfd_open = getattr(os, "pidfd_open", None)  # Linux >= 5.3; elsewhere a slower fallback
#: Without pidfds a bounded wait for "any of our children" can only poll; this is its period.
_POLL_WITHOUT_PIDFD = 0.05


class ForkPerRequest:
    """Forks a child for each request; the child runs ``serve()`` and exits.

    The child's exit status is 0 when ``serve()`` returned and 1 when it raised; nothing it
    raises reaches the parent. The parent keeps the PIDs of its live children and reaps only
    those (``waitpid`` on each PID, never ``waitpid(-1)``), so children forked by other code
    in the same process are left alone.

    In the parent, right after each fork, ``on_fork(request, pid)`` returns a token for the
    child (None: nothing to keep), which this strategy holds until the child is reaped and
    then hands to ``on_exit(token)``; an exception from either callback is logged.

    A child starts with SIGTERM at its default action (it dies of it), not the parent's
    Python handler, which would act on the parent's state, and it has no children of its
    own: a drain or ``collect()`` in a child never waits for or signals its siblings.
    """

    def __init__(
        self,
        max_children: Callable[[], int] = lambda: 40,
        on_fork: Callable[[object, int], object] | None = None,
        on_exit: Callable[[object], object] | None = None,
    ) -> None:
        self._max_children = max_children
        self._on_fork = on_fork
        self._on_exit = on_exit
        self._tokens: dict[int, object] = {}  # pid -> what on_fork returned
        self.children: set[int] = set()
        self.has_forked = False

    def submit(self, request: object, serve: Callable[[], object]) -> bool:
        if self._tokens:
            self.forget_gone()  # reaped by code of its own: not left to pile up
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:  # os.fork() raised, or this is the parent
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:
            self._serve_in_child(serve, mask)
        self.has_forked = True
        if self._on_fork is not None:
            try:
                token = self._on_fork(request, pid)
            except Exception:
                logger.exception("on_fork failed for child pid %d", pid)
            else:
                if token is not None:
                    self._tokens[pid] = token
        # only now: another thread's collect() may reap it from this moment on
        self.children.add(pid)
        return True

    def _serve_in_child(self, serve: Callable[[], object], mask: set[int | signal.Signals]) -> None:
        """In the child: start afresh (see the class), run *serve*, exit; never returns."""
        status = 1
        try:
            # SIGTERM stayed blocked since the fork, so no signal ran a parent's handler
            with contextlib.suppress(ValueError):  # not the main thread: a platform's oddity
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.children = set()
            self._tokens.clear()
            serve()
            status = 0
        finally:
            os._exit(status)

    def forget_gone(self) -> None:
        """Let go of the tokens of children no longer in ``children`` (taken out by other
        code, as the stdlib's ``active_children`` allows)."""
        for pid in [pid for pid in self._tokens if pid not in self.children]:
            self._gone(pid)

    def collect(self, *, blocking: bool = False) -> None:
        """Reap exited children; first wait until fewer than ``max_children`` are alive.

        With *blocking*, wait for every child to exit.
        """
        while len(self.children) >= self._max_children():
            self._wait_for_any(timeout=None)
        for pid in list(self.children):
            self._reap(pid, blocking=blocking)

    def has_capacity(self) -> bool:
        return True

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Never called: this strategy is never full."""

    def recheck_after(self) -> float | None:
        return None

    def drain(self, deadline: float | None) -> bool:
        while self.children:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False
            self._wait_for_any(timeout)
        return True

    def close(self) -> None:
        """Nothing to release: children still serving finish on their own."""

    def _reap(self, pid: int, *, blocking: bool) -> bool:
        """Reap *pid* if it has exited (or wait for it, if *blocking*); True if it is gone."""
        try:
            done, _ = os.waitpid(pid, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped by someone else
        if done:
            self._gone(pid)
        return bool(done)

    def _gone(self, pid: int) -> None:
        self.children.discard(pid)
        token = self._tokens.pop(pid, None)
        if token is not None and self._on_exit is not None:
            try:
                self._on_exit(token)
            except Exception:
                logger.exception("on_exit failed for child pid %d", pid)

    def _wait_for_any(self, timeout: float | None) -> None:
        """Block until one of our children exits (or *timeout*), and reap what has exited."""
        if _pidfd_open is None:
            self._wait_for_any_without_pidfd(timeout)
            return
        pidfds: dict[int, int] = {}
        try:
            for pid in list(self.children):
                try:
                    pidfds[_pidfd_open(pid)] = pid
                except ProcessLookupError:
                    self._gone(pid)  # already reaped elsewhere
            if pidfds:
                poller = select.poll()  # not select(): pidfds may be above FD_SETSIZE
                for fd in pidfds:
                    poller.register(fd, select.POLLIN)
                ready = poller.poll(None if timeout is None else timeout * 1000)
                for fd, _ in ready:
                    self._reap(pidfds[fd], blocking=False)
        finally:
            for fd in pidfds:
                os.close(fd)

    def _wait_for_any_without_pidfd(self, timeout: float | None) -> None:
        """Where there are no pidfds: wait on the oldest child, or poll until *timeout*."""
        if timeout is None:
            self._reap(next(iter(self.children)), blocking=True)
            return
        for pid in list(self.children):
            self._reap(pid, blocking=False)
        if self.children:
            time.sleep(min(timeout, _POLL_WITHOUT_PIDFD))
