"""``Supervisor``: the public face of the arbiter — its options, checked, and ``run()``."""

from __future__ import annotations

import socket
from collections.abc import Callable

from .._errors import ConfigError
from ._arbiter import Arbiter, Settings
from ._worker import Target

__all__ = ["Supervisor"]


class Supervisor:
    """Pre-forked, supervised worker processes sharing listening sockets (gunicorn's arbiter).

    The parent keeps *sockets* (already bound and listening) open for its whole life and forks
    *workers* children; each runs ``target(sockets, worker)`` with a ``Worker`` handle, and
    exits when the target returns. The parent never imports the user's code: the target does,
    in the worker, so a reload (SIGHUP) loads it afresh.

    - A worker that exits is replaced; when workers keep exiting soon after boot, respawns
      back off exponentially (capped at a few seconds). A worker whose last heartbeat
      (``Worker.notify()``) is older than *worker_timeout* seconds is killed (SIGKILL) and
      replaced. A worker stops itself after ``max_requests + randint(0, max_requests_jitter)``
      requests (``Worker.count_request()``; 0: never) and a replacement starts at once.
    - SIGTERM: graceful stop — TERM every worker, wait up to *graceful_timeout*, SIGKILL the
      rest. SIGINT, SIGQUIT: fast stop — QUIT the workers, SIGKILL them after a second (also
      during a graceful stop, which it cuts short).
      SIGHUP: fork a new generation, and TERM the old one once every new worker has called
      ``Worker.ready()`` (or after *worker_timeout*, if at least one is ready; if none is,
      the reload is called off and the old generation keeps serving). SIGTTIN / SIGTTOU: one
      worker more / one fewer (never below one).
    - A supervisor that did not run for a while (SIGSTOP, Ctrl-Z, a frozen container) does
      not count that time against its workers' heartbeats and deadlines.
    - A target that raises ImportError (``netserve.HandlerImportError`` included) or another
      ``NetserveError`` (a ``ConfigError``) before ``Worker.ready()`` makes its worker exit
      with ``EXIT_BOOT_ERROR``; the supervisor logs the error once and stops, unless other
      workers are serving: then a reload is called off (the old workers keep serving), and
      a replacement is retried with the back-off.
    - *on_stop(graceful)* is called when a stop begins (not a reload), once the workers were
      asked to stop: no worker will accept again, so the caller may close its sockets then,
      for new clients to be refused at once rather than wait in the backlog for the drain.

    Raises ``ConfigError`` for an invalid option.
    """

    def __init__(
        self,
        target: Target,
        sockets: list[socket.socket],
        *,
        workers: int = 2,
        worker_timeout: float = 30.0,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        graceful_timeout: float = 30.0,
        on_stop: Callable[[bool], object] | None = None,
    ) -> None:
        if not callable(target):
            raise ConfigError(f"target: {target!r} is not callable")
        _check(workers >= 1, "workers", workers, "must be at least 1")
        _check(worker_timeout > 0, "worker_timeout", worker_timeout, "must be positive")
        _check(max_requests >= 0, "max_requests", max_requests, "must be 0 (never) or more")
        _check(max_requests_jitter >= 0, "max_requests_jitter", max_requests_jitter, "< 0")
        _check(graceful_timeout >= 0, "graceful_timeout", graceful_timeout, "must not be < 0")
        self._settings = Settings(
            target=target,
            sockets=tuple(sockets),
            workers=workers,
            worker_timeout=worker_timeout,
            max_requests=max_requests,
            max_requests_jitter=max_requests_jitter,
            graceful_timeout=graceful_timeout,
            on_stop=on_stop,
        )
        self._running = False

    def run(self) -> int:
        """Supervise until stopped; return the exit code to use: 0, or ``EXIT_BOOT_ERROR``.

        Call it from the main thread (signal handlers can only be installed there). It puts
        the sockets in non-blocking mode — every worker waits on them and only one wins each
        connection, so a blocking ``accept()`` would hang the others — and leaves them open:
        they are the caller's. It installs its signal handlers and restores the previous
        ones on return. It never calls ``sys.exit``. Raises ``RuntimeError`` if already running.
        """
        if self._running:
            raise RuntimeError("Supervisor.run() is already running")
        self._running = True
        try:
            for sock in self._settings.sockets:
                sock.setblocking(False)
            return Arbiter(self._settings).run()
        finally:
            self._running = False

    def __repr__(self) -> str:
        return f"<Supervisor workers={self._settings.workers}>"


def _check(ok: bool, name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")
