"""The worker's side: the ``Worker`` handle given to the target, and the forked child's life.

A stop is requested by a signal (TERM: graceful; INT, QUIT: fast), by ``count_request()``
reaching ``max_requests``, or by the parent's death. Requesting one only sets flags and
writes a byte to a pipe, which is safe in a signal handler; the ``on_stop`` callbacks run in
the worker's stop thread, never in a signal handler, so they may take locks and may even
block (``server.shutdown()`` waits for ``serve_forever()`` to return: harmless there).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn, cast

from .._errors import NetserveError
from .._log import logger
from ._loadboard import AcceptBalance
from ._protocol import (
    EXIT_BOOT_ERROR,
    EXIT_CRASH,
    EXIT_OK,
    HEARTBEAT,
    READY,
    STOPPING,
    encode_boot_error,
)

__all__ = [
    "FAST_STOP_WAIT",
    "Target",
    "Worker",
    "install_signal_handlers",
    "load_prctl",
    "run_worker",
    "set_parent_death_signal",
]

#: Heartbeats sent per ``worker_timeout``: a healthy worker is then taken for a hung one only
#: after missing several in a row, which a loaded machine does not cause.
HEARTBEATS_PER_TIMEOUT = 4
#: The longest wait between two heartbeats, whatever ``worker_timeout`` is: ``notify()`` also
#: looks for the parent's death, which it should notice within a second.
MAX_HEARTBEAT_INTERVAL = 1.0
#: How often the stop thread looks for the parent's death itself, for targets that seldom
#: call ``notify()`` (or never do), and enforces the stop deadline of an orphaned worker.
ORPHAN_CHECK_INTERVAL = 1.0
#: How long a fast stop may take before the worker is killed: long enough to close sockets
#: and flush logs, short enough that Ctrl-C feels immediate.
FAST_STOP_WAIT = 1.0
#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``: the signal the kernel sends when the parent
#: dies.
_PR_SET_PDEATHSIG = 1
#: How long ``Worker.close()`` waits for the stop thread, which may be in a callback.
_CLOSE_JOIN_TIMEOUT = 5.0

#: What the supervisor runs in each worker: ``target(sockets, worker)``.
Target = Callable[[list[socket.socket], "Worker"], None]
_Callback = Callable[[bool], None]


class Worker:
    """The child-side handle passed to the target: heartbeats, readiness, request counting,
    and how the target learns that it must stop.

    Made by the supervisor in each forked worker; *channel* is the write end of this worker's
    pipe to the supervisor (non-blocking; not closed by the handle). ``pid``, ``age`` (the
    spawn index, 1 for the first worker), ``parent_pid``, ``graceful_timeout`` and
    ``max_requests`` (0: never recycle) are plain attributes; ``stopping`` says whether a
    stop has been requested.
    """

    def __init__(
        self,
        *,
        age: int,
        parent_pid: int,
        channel: int,
        worker_timeout: float = 30.0,
        max_requests: int = 0,
        graceful_timeout: float = 30.0,
        balance: AcceptBalance | None = None,
    ) -> None:
        self.pid = os.getpid()
        #: Whether to accept another connection now, from the counts of all the workers
        #: (None: accept freely). The serving code asks it; see ``_loadboard``.
        self.balance = balance
        self.age = age
        self.parent_pid = parent_pid
        self.graceful_timeout = graceful_timeout
        self.max_requests = max_requests
        self._channel = channel
        self._heartbeat_interval = min(
            MAX_HEARTBEAT_INTERVAL, worker_timeout / HEARTBEATS_PER_TIMEOUT
        )
        self._next_heartbeat = 0.0  # the first notify() sends one
        self._is_ready = False
        self._parent_lost = False
        # Written by signal handlers: plain assignments only.
        self._stop_requested = False
        self._graceful = True
        self._stop_reason: str | int = ""  # a signal number when a handler set it
        self._stop_requested_at = 0.0
        self._said_stopping = False  # STOPPING sent to the supervisor
        # Shared by the target's threads and the stop thread.
        self._lock = threading.Lock()
        self._requests = 0
        self._callbacks: list[_Callback] = []
        self._callbacks_called = 0
        self._callbacks_graceful = True  # what the callbacks called so far were told
        self._thread: threading.Thread | None = None
        self._closed = False
        self._exit_when_orphaned = False  # set by run_worker: only a real worker may exit
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_writer, False)

    @property
    def stopping(self) -> bool:
        """True once a stop has been requested (by a signal, max_requests or parent death)."""
        return self._stop_requested

    def notify(self) -> None:
        """Heartbeat: call it often from the serve loop (``service_actions``, say).

        Cheap when called more often than needed: a heartbeat is written at most every
        ``min(worker_timeout / 4, 1 s)``. At the same pace it checks that the parent is alive
        (``os.getppid()`` unchanged, pipe not broken); if not, it requests a graceful stop.
        """
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self._heartbeat_interval
        if self.balance is not None:
            self.balance.alive()
        if os.getppid() != self.parent_pid:
            self._lose_parent(f"parent pid {self.parent_pid} is gone")
            return
        self._send(HEARTBEAT)

    def ready(self) -> None:
        """Say "I am serving"; during a reload the supervisor stops the old workers only when
        every new one has said it. Later calls do nothing."""
        if self._is_ready:
            return
        self._is_ready = True
        if self.balance is not None:
            self.balance.start_accepting()
        self._send(READY)
        self._next_heartbeat = time.monotonic() + self._heartbeat_interval

    def count_request(self) -> None:
        """Count one request served; at ``max_requests`` request a graceful stop.

        Safe from any thread. The supervisor is told at once, so it starts a replacement
        while this worker finishes its requests in flight.
        """
        with self._lock:
            self._requests += 1
            reached = self._requests == self.max_requests
        if reached and not self._stop_requested:
            logger.info(
                "worker pid %d: %d requests served (max_requests); stopping gracefully",
                self.pid,
                self.max_requests,
            )
            self._said_stopping = True
            self._send(STOPPING)
            self._request_stop(graceful=True, reason="max_requests reached")

    def on_stop(self, callback: _Callback) -> None:
        """Call ``callback(graceful)`` when a stop is requested (at once if it was), and
        again with False if a fast stop follows a graceful one.

        *graceful* is False for a fast stop (INT, QUIT): do not wait for requests in flight.
        The callback runs in the worker's stop thread, after the callbacks registered before
        it; it should only ask the target to stop (``server.shutdown()`` is fine: it blocks
        only the stop thread, until ``serve_forever()`` returns). Its exceptions are logged.
        """
        with self._lock:
            self._callbacks.append(callback)
            self._start_stop_thread_locked()
        if self._stop_requested:
            self._wake()

    def close(self) -> None:
        """End the stop thread and close the handle's own pipe (not *channel*).

        A worker process never needs this (it ends with ``os._exit``); tests that make a
        handle in-process do.
        """
        self._closed = True
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_JOIN_TIMEOUT)
        for fd in (self._wake_reader, self._wake_writer):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        state = "stopping" if self._stop_requested else "serving" if self._is_ready else "booting"
        return f"<Worker pid={self.pid} age={self.age} {state}>"

    # -- internals -------------------------------------------------------------------------

    def _request_stop(self, graceful: bool, reason: str | int) -> None:
        """Record a stop request and wake the stop thread; a fast stop may cut a graceful
        one short, not the reverse. Safe in a signal handler: plain assignments and one
        non-blocking ``os.write``; no lock, no logging."""
        if self._stop_requested and (graceful or not self._graceful):
            return
        self._graceful = graceful
        self._stop_reason = reason
        self._stop_requested_at = time.monotonic()
        self._stop_requested = True
        if self.balance is not None:
            self.balance.stop_accepting()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wakeup is pending; closed: shutting down
            os.write(self._wake_writer, b"\0")

    def _send(self, message: bytes) -> None:
        """Write one message to the supervisor; a broken pipe means that it is gone."""
        if self._parent_lost:
            return
        try:
            os.write(self._channel, message)
        except BlockingIOError:
            pass  # the pipe is full of heartbeats the supervisor has not read yet: one more is moot
        except OSError:
            self._lose_parent("the pipe to the supervisor is broken")

    def _report_boot_error(self, text: str) -> None:
        logger.debug("worker pid %d: cannot boot: %s", self.pid, text)
        self._send(encode_boot_error(text))

    def _lose_parent(self, why: str) -> None:
        if self._parent_lost:
            return
        self._parent_lost = True
        logger.warning("worker pid %d: %s; stopping", self.pid, why)
        self._request_stop(graceful=True, reason=why)

    def _parent_gone(self) -> bool:
        return self._parent_lost or os.getppid() != self.parent_pid

    def _start_stop_thread_locked(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._stop_thread_main, name=f"netserve worker {self.pid} stop", daemon=True
            )
            self._thread.start()

    def _start_stop_thread(self) -> None:
        with self._lock:
            self._start_stop_thread_locked()

    def _stop_thread_main(self) -> None:
        """Wait for stop requests and run the callbacks; watch for the parent's death."""
        while not self._closed:
            try:
                ready, _, _ = select.select([self._wake_reader], [], [], ORPHAN_CHECK_INTERVAL)
                if ready:
                    os.read(self._wake_reader, 4096)
            except (OSError, ValueError):
                return  # close() gave up waiting for a callback and closed the pipe
            if self._closed:
                return
            if not self._stop_requested and self._parent_gone():
                self._lose_parent(f"parent pid {self.parent_pid} is gone")
            if self._stop_requested:
                if not self._said_stopping:  # it accepts no more (see _request_stop)
                    self._said_stopping = True
                    self._send(STOPPING)
                self._run_callbacks()
                self._exit_if_abandoned()

    def _run_callbacks(self) -> None:
        graceful = self._graceful
        with self._lock:
            if self._callbacks_graceful and not graceful:  # a fast stop cuts a graceful one
                self._callbacks_called = 0  # short: every callback hears of it
            self._callbacks_graceful = graceful
            pending = self._callbacks[self._callbacks_called :]
            self._callbacks_called = len(self._callbacks)
        if not pending:
            return
        logger.debug(
            "worker pid %d: %s stop (%s)",
            self.pid,
            "graceful" if graceful else "fast",
            _describe_reason(self._stop_reason),
        )
        for callback in pending:
            try:
                callback(graceful)
            except Exception:
                logger.exception("worker pid %d: on_stop callback %r failed", self.pid, callback)

    def _exit_if_abandoned(self) -> None:
        """With no supervisor left to kill it, a worker past its stop deadline exits itself."""
        if not (self._exit_when_orphaned and self._parent_gone()):
            return
        limit = self.graceful_timeout if self._graceful else FAST_STOP_WAIT
        if time.monotonic() - self._stop_requested_at < limit:
            return
        logger.warning(
            "worker pid %d: orphaned and still running %.1f s after the stop request; exiting",
            self.pid,
            limit,
        )
        _flush_output()
        os._exit(EXIT_CRASH)


def _describe_reason(reason: str | int) -> str:
    if isinstance(reason, int):
        try:
            return signal.Signals(reason).name
        except ValueError:
            return f"signal {reason}"
    return reason


def install_signal_handlers(worker: Worker) -> None:
    """Install the worker's handlers: TERM asks for a graceful stop, INT and QUIT a fast one.

    The handlers only call ``worker._request_stop``, which is safe in a signal handler.
    """

    def graceful(signum: int, frame: FrameType | None) -> None:
        worker._request_stop(graceful=True, reason=signum)

    def fast(signum: int, frame: FrameType | None) -> None:
        worker._request_stop(graceful=False, reason=signum)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, fast)
    signal.signal(signal.SIGQUIT, fast)


_Prctl = Callable[[int, int, int, int, int], int]


def load_prctl() -> _Prctl | None:
    """libc's ``prctl`` on Linux, else None. Call it in the parent, before forking: loading a
    library in the child of a threaded process can deadlock on the loader's lock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast(_Prctl, ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def set_parent_death_signal(prctl: _Prctl | None, signum: int) -> None:
    """Have the kernel send *signum* to this process when its parent dies (Linux only).

    An extra: ``Worker.notify()`` and the stop thread notice the parent's death anyway.
    """
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def run_worker(
    target: Target, sockets: list[socket.socket], make_worker: Callable[[], Worker]
) -> NoReturn:
    """The whole life of a forked worker; never returns.

    ``make_worker()`` prepares the process and returns its handle; then ``target(sockets,
    worker)`` runs. The exit status is ``EXIT_OK`` when the target returns,
    ``EXIT_BOOT_ERROR`` when it raises, before ``worker.ready()``, an ImportError or a
    ``NetserveError`` (a ``ConfigError``, say: every worker would fail the same way; its
    message goes to the supervisor over the pipe, and is not logged here), the code of a
    ``SystemExit``, and ``EXIT_CRASH`` for any other exception (logged with its traceback).
    Logs are flushed before ``os._exit``.
    """
    status = EXIT_CRASH
    try:
        worker = make_worker()
        worker._exit_when_orphaned = True
        worker._start_stop_thread()
        try:
            target(sockets, worker)
            status = EXIT_OK
        except (ImportError, NetserveError) as exc:
            if worker._is_ready:
                raise
            status = EXIT_BOOT_ERROR
            worker._report_boot_error(f"{type(exc).__name__}: {exc}")
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        logger.exception("worker pid %d: the target failed", os.getpid())
    finally:
        _flush_output()
        os._exit(status)


def _exit_status(code: object) -> int:
    """The process exit status for ``SystemExit(code)``, as the interpreter would use."""
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code & 0xFF
    logger.error("worker pid %d: exiting: %s", os.getpid(), code)
    return EXIT_CRASH


def _flush_output() -> None:
    """Flush what ``os._exit`` would lose: log handlers and the standard streams."""
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
