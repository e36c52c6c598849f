"""The supervisor's signals: handlers that only enqueue, and a wakeup pipe for its loop.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock; so the handlers here do nothing but ``deque.append`` (which takes no
lock), and ``signal.set_wakeup_fd`` wakes the loop's ``select()`` from C, at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeAlias

__all__ = ["SUPERVISOR_SIGNALS", "SignalQueue"]

#: What ``signal.signal()`` takes and returns (None aside: see ``_handler_or_default``).
_Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers

#: Signals the supervisor acts on; SIGCHLD only wakes the loop so that it reaps at once.
SUPERVISOR_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)

#: Bytes read from the wakeup pipe at once; the deque, not the pipe, says which signals came.
_WAKEUP_READ_SIZE = 4096


class SignalQueue:
    """Signals received, in order, in ``pending``; ``fileno()`` is readable when one came.

    ``install()`` replaces the handlers of ``SUPERVISOR_SIGNALS`` and the wakeup fd, and
    ``restore()`` puts back what was there before (both only from the main thread, as
    ``signal.signal`` requires). ``forget_in_child()`` is the forked worker's way out: it
    restores the previous handlers and closes the pipe without touching the parent's state.
    """

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self._previous: dict[signal.Signals, _Handler] = {}
        self._previous_wakeup_fd: int | None = None
        self._pipe: tuple[int, int] | None = None

    def install(self) -> None:
        """Create the wakeup pipe and install the handlers; on failure, undo what was done."""
        reader, writer = os.pipe()
        self._pipe = (reader, writer)
        try:
            os.set_blocking(reader, False)
            os.set_blocking(writer, False)  # set_wakeup_fd requires it: a handler never blocks
            self._previous_wakeup_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
            for signum in SUPERVISOR_SIGNALS:
                self._previous[signum] = _handler_or_default(signal.signal(signum, self._handle))
        except BaseException:
            self.restore()
            raise

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def fileno(self) -> int:
        """The read end of the wakeup pipe, for ``select()``."""
        if self._pipe is None:
            raise ValueError("signal queue is not installed")
        return self._pipe[0]

    def drain_wakeup(self) -> None:
        """Empty the wakeup pipe; the signals themselves are in ``pending``."""
        if self._pipe is None:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self._pipe[0], _WAKEUP_READ_SIZE):
                pass

    def restore(self) -> None:
        """Put back the previous handlers and wakeup fd, and close the pipe. Idempotent."""
        self._restore_handlers()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        self._close_pipe()

    def forget_in_child(self) -> None:
        """In a forked worker: previous handlers back, no wakeup fd, the pipe closed.

        The signals the parent handled get the dispositions the process had before the
        supervisor started, so a worker behaves like the program it was forked from.
        """
        signal.set_wakeup_fd(-1)
        self._restore_handlers()
        self._previous_wakeup_fd = None
        self._close_pipe()
        self.pending.clear()

    def _restore_handlers(self) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def _close_pipe(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)


def _handler_or_default(handler: _Handler | None) -> _Handler:
    """A handler installed from C reads as None and cannot be reinstalled: use the default."""
    return signal.SIG_DFL if handler is None else handler
