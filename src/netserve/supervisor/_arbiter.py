"""The supervisor's loop: one loop in one thread acts on everything.

Signal handlers only enqueue (see ``_signals``); each turn of the loop handles the queued
signals, reaps its own children (``waitpid`` on each of their PIDs, never ``-1``), kills
workers past a deadline (no heartbeat for ``worker_timeout``, or not stopped in time), moves a
reload on, and forks what is missing. Then it waits in ``select()`` on the signal wakeup pipe
and on every worker's pipe until the nearest deadline; SIGCHLD and messages wake it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from .._log import logger
from ._loadboard import AcceptBalance, LoadBoard
from ._protocol import BOOT_ERROR, EXIT_BOOT_ERROR, READY, STOPPING, Message, MessageReader
from ._signals import SUPERVISOR_SIGNALS, SignalQueue
from ._worker import (
    FAST_STOP_WAIT,
    Target,
    Worker,
    install_signal_handlers,
    load_prctl,
    run_worker,
    set_parent_death_signal,
)

__all__ = ["Arbiter", "Settings"]

#: The longest the loop sleeps when no deadline is nearer. Signals and messages wake it at
#: once; this only bounds how stale its view could get if a wakeup were ever lost.
LOOP_MAX_WAIT = 1.0
#: A turn of the loop lasting this much longer than its wait means the supervisor did not run
#: (Ctrl-Z, SIGSTOP, a frozen container): its workers did not either, so the stall does not
#: count against their heartbeats or their deadlines. Longer than a busy machine's delays.
STALL_THRESHOLD = 1.0
#: A worker that exits this soon after its spawn without being asked to counts as an early
#: exit: it probably cannot start, and respawning it at once would loop.
EARLY_EXIT_WINDOW = 5.0
#: The back-off after the second early exit in a row, doubled at each further one. The first
#: is replaced at once: one crash is not a loop.
BACKOFF_BASE = 0.25
#: The longest back-off: a crash loop costs at most one fork per this many seconds, and a
#: worker whose problem went away is back within it.
BACKOFF_CAP = 4.0
#: Early exits further apart than this are not "in a row" and the count starts over. Longer
#: than ``BACKOFF_CAP`` plus a boot, so a capped crash loop keeps its count.
BACKOFF_RESET_AFTER = 30.0
#: How long a stop waits for every worker to say it no longer accepts (STOPPING) before
#: ``on_stop`` runs all the same: a worker busy in a handler answers within milliseconds.
ON_STOP_WAIT = 1.0
#: The fewest workers TTOU leaves running: with none, nobody would accept connections.
MIN_WORKERS = 1
#: Bytes read from a worker's pipe at once: heartbeats are a byte each, a boot error < 4 KiB.
_READ_SIZE = 4096
#: The largest exponent of the back-off doubling, so that the float never overflows.
_MAX_DOUBLINGS = 16


@dataclass(frozen=True)
class Settings:
    """What ``Supervisor`` was given, checked."""

    target: Target
    sockets: tuple[socket.socket, ...]
    workers: int
    worker_timeout: float
    max_requests: int
    max_requests_jitter: int
    graceful_timeout: float
    on_stop: Callable[[bool], object] | None = None


@dataclass(eq=False)
class _Child:
    """The supervisor's record of one worker process."""

    pid: int
    age: int
    channel: int | None  # read end of the worker's pipe; None once closed
    slot: int | None  # its slot on the load board
    spawned_at: float
    last_heartbeat: float
    reader: MessageReader = field(default_factory=MessageReader)
    ready: bool = False
    generation: int = 0  # how many reloads had begun when it was forked
    old: bool = False  # of a generation a reload replaces
    stop_deadline: float | None = None  # set once it was asked (or said it would) stop
    said_stopping: bool = False  # it said it accepts no more
    killed: bool = False  # SIGKILL sent
    boot_error: str | None = None

    @property
    def active(self) -> bool:
        """Counts toward the number of workers: not replaced, not stopping, not killed."""
        return not (self.old or self.killed) and self.stop_deadline is None


class Arbiter:
    """One run of a supervisor: its children, its signals, its loop. Used once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._target_count = settings.workers
        self._children: dict[int, _Child] = {}
        self._signals = SignalQueue()
        self._selector = selectors.DefaultSelector()
        self._prctl = load_prctl()
        self._pid = os.getpid()
        self._next_age = 1
        self._generation = 0  # the generation forked now: one more at each reload
        self._stopping: str | None = None  # "graceful" or "fast" once a stop began
        self._exit_code = 0
        self._boot_failed = False
        self._reload_deadline: float | None = None
        self._on_stop_due: float | None = None  # on_stop not run yet; run by then at the latest
        self._early_exits = 0
        self._last_early_exit = -BACKOFF_RESET_AFTER
        self._next_spawn_at = 0.0
        self._board = LoadBoard()  # before any fork: every worker shares it

    def run(self) -> int:
        """Supervise until stopped; return the exit code. Signal handlers are restored, the
        pipes closed, and (should the loop itself fail) every worker killed and reaped."""
        try:
            self._signals.install()
            self._selector.register(self._signals.fileno(), selectors.EVENT_READ, None)
            logger.info("supervisor pid %d: %d workers", self._pid, self._target_count)
            checked_at = time.monotonic()
            expected = 0.0  # of the turn: the wait (up to its timeout), and on_stop
            while True:
                self._handle_signals()
                self._reap()
                expected += self._run_on_stop(time.monotonic())
                if self._stopping is not None and not self._children:
                    break
                now = time.monotonic()
                # a turn takes its wait and a few milliseconds: the rest is a stall, wherever
                # in the turn it came (a wait that ended early leaves no room for one)
                self._discount_stall(now - checked_at - expected)
                checked_at = now
                self._enforce_deadlines(now)
                self._advance_reload(now)
                self._heal(now)
                wait = self._wait_time()
                polled_at = time.monotonic()
                self._poll(wait)
                expected = min(time.monotonic() - polled_at, wait)
            logger.info("supervisor pid %d: stopped", self._pid)
            return self._exit_code
        finally:
            self._kill_remaining()
            self._signals.restore()
            self._selector.close()

    # -- signals ---------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        pending = self._signals.pending
        while pending:
            signum = pending.popleft()
            if signum == signal.SIGTERM:
                self._begin_stop(graceful=True)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self._begin_stop(graceful=False)
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGTTIN:
                self._scale(+1)
            elif signum == signal.SIGTTOU:
                self._scale(-1)
            # SIGCHLD only woke the loop: reaping comes next

    def _begin_stop(self, *, graceful: bool) -> None:
        """TERM every worker and wait up to graceful_timeout, or QUIT them and wait up to
        ``FAST_STOP_WAIT``; a fast stop may cut a graceful one short, not the reverse."""
        if self._stopping == "fast" or (graceful and self._stopping is not None):
            return
        self._stopping = "graceful" if graceful else "fast"
        self._reload_deadline = None
        if graceful:
            signum, wait = signal.SIGTERM, self._settings.graceful_timeout
        else:
            signum, wait = signal.SIGQUIT, FAST_STOP_WAIT
        logger.info(
            "%s stop: sending %s to %d workers, waiting up to %.1f s",
            self._stopping,
            signum.name,
            len(self._children),
            wait,
        )
        for child in self._children.values():
            if not child.killed:
                self._ask_to_stop(child, signum, wait)
        if self._settings.on_stop is not None and self._on_stop_due is None:
            self._on_stop_due = time.monotonic() + ON_STOP_WAIT

    def _run_on_stop(self, now: float) -> float:
        """Once every worker has said it accepts no more (or ``ON_STOP_WAIT`` has passed),
        run the ``on_stop`` callback: nobody takes connections from the sockets any more.
        Return the seconds it took (0 if not run): time the loop was busy, not stalled."""
        due = self._on_stop_due
        if due is None:
            return 0.0
        if now < due and not all(c.said_stopping for c in self._children.values()):
            return 0.0
        self._on_stop_due = None
        on_stop = self._settings.on_stop
        assert on_stop is not None
        started = time.monotonic()
        try:
            on_stop(self._stopping == "graceful")
        except Exception:
            logger.exception("the supervisor's on_stop callback failed")
        return time.monotonic() - started

    def _reload(self) -> None:
        """Start a new generation; the old one is stopped once the new one is ready."""
        if self._stopping is not None:
            logger.info("reload ignored: the supervisor is stopping")
            return
        old = [child for child in self._children.values() if child.active]
        for child in old:
            child.old = True
        self._generation += 1
        self._reload_deadline = time.monotonic() + self._settings.worker_timeout
        logger.info(
            "reload: starting %d new workers; %d old workers stop once they are ready",
            self._target_count,
            len(old),
        )

    def _scale(self, delta: int) -> None:
        if self._stopping is not None:
            return
        if delta < 0 and self._target_count <= MIN_WORKERS:
            logger.info("not scaling down: already at %d worker", self._target_count)
            return
        self._target_count += delta
        logger.info("scaling %s to %d workers", "up" if delta > 0 else "down", self._target_count)
        self._stop_surplus()

    def _stop_surplus(self) -> None:
        """Stop (TERM) the oldest active workers beyond the number wanted, if any."""
        active = sorted((c for c in self._children.values() if c.active), key=lambda c: c.age)
        for child in active[: max(0, len(active) - self._target_count)]:  # the oldest go
            self._ask_to_stop(child, signal.SIGTERM, self._settings.graceful_timeout)

    # -- children --------------------------------------------------------------------------

    def _ask_to_stop(self, child: _Child, signum: signal.Signals, wait: float) -> None:
        """Send *signum* and give *child* until *wait* seconds from now (or its earlier
        deadline) to exit; past that it is killed."""
        deadline = time.monotonic() + wait
        if child.stop_deadline is None or deadline < child.stop_deadline:
            child.stop_deadline = deadline
        _kill(child.pid, signum)

    def _enforce_deadlines(self, now: float) -> None:
        timeout = self._settings.worker_timeout
        for child in self._children.values():
            if child.killed:
                continue
            if child.stop_deadline is not None:
                if now >= child.stop_deadline:
                    logger.warning("worker pid %d did not stop in time; killing it", child.pid)
                    self._kill_child(child)
            elif now - child.last_heartbeat >= timeout:
                logger.warning(
                    "worker pid %d (age %d): no heartbeat for %.1f s (worker_timeout %.1f s);"
                    " killing it",
                    child.pid,
                    child.age,
                    now - child.last_heartbeat,
                    timeout,
                )
                self._kill_child(child)

    def _discount_stall(self, late: float) -> None:
        """A turn of the loop took *late* seconds more than its wait: past
        ``STALL_THRESHOLD``, the supervisor was stopped (and its workers with it, as Ctrl-Z
        or a frozen container stops them all). Their heartbeats could not come meanwhile:
        each worker's clock starts over, and the other deadlines move on by *late*, rather
        than every worker being killed at once."""
        if late <= STALL_THRESHOLD:
            return
        logger.warning(
            "the supervisor did not run for %.1f s (stopped or frozen?): "
            "the workers' heartbeat clocks start over",
            late,
        )
        now = time.monotonic()
        for child in self._children.values():
            child.last_heartbeat = now
            if child.stop_deadline is not None:
                child.stop_deadline += late
        if self._reload_deadline is not None:
            self._reload_deadline += late
        if self._on_stop_due is not None:
            self._on_stop_due += late

    def _kill_child(self, child: _Child) -> None:
        child.killed = True
        _kill(child.pid, signal.SIGKILL)

    def _advance_reload(self, now: float) -> None:
        if self._reload_deadline is None:
            return
        ready = sum(1 for child in self._children.values() if child.active and child.ready)
        if ready < self._target_count and now < self._reload_deadline:
            return
        self._reload_deadline = None
        old = [
            child
            for child in self._children.values()
            if child.old and child.stop_deadline is None and not child.killed
        ]
        if not ready and any(c.ready for c in old):
            # a new generation that cannot come up (it crashes, or hangs in its boot)
            self._call_off_reload(
                f"no new worker ready after {self._settings.worker_timeout:.1f} s"
            )
            return
        if ready < self._target_count:
            logger.warning(
                "reload: only %d of %d new workers ready after %.1f s; stopping the old anyway",
                ready,
                self._target_count,
                self._settings.worker_timeout,
            )
        logger.info("reload: %d new workers ready; stopping %d old workers", ready, len(old))
        for child in old:
            self._ask_to_stop(child, signal.SIGTERM, self._settings.graceful_timeout)

    def _heal(self, now: float) -> None:
        """Fork workers until the count is reached, unless stopping or backing off."""
        if self._stopping is not None:
            return
        missing = self._target_count - sum(1 for c in self._children.values() if c.active)
        while missing > 0 and now >= self._next_spawn_at:
            if not self._spawn():
                break
            missing -= 1

    def _spawn(self) -> bool:
        """Fork one worker; False (logged, and counted for the back-off) if that failed.

        The supervisor's signals are blocked across ``fork()``, so a signal sent to the new
        worker before it has installed its own handlers waits for them instead of reaching
        the parent's handlers in the child.
        """
        settings = self._settings
        age = self._next_age
        self._next_age += 1
        max_requests = 0
        if settings.max_requests > 0:
            max_requests = settings.max_requests + random.randint(0, settings.max_requests_jitter)
        try:
            reader, writer = os.pipe()
        except OSError as exc:
            logger.error("cannot create a pipe for a worker: %s", exc)
            self._note_early_exit(time.monotonic())
            return False
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        slot = self._board.claim()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(reader)
            os.close(writer)
            if slot is not None:
                self._board.free(slot)
            logger.error("cannot fork a worker: %s", exc)
            self._note_early_exit(time.monotonic())
            return False
        if pid == 0:
            self._become_worker(age, reader, writer, max_requests, mask, slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(writer)
        now = time.monotonic()
        child = _Child(
            pid=pid,
            age=age,
            channel=reader,
            slot=slot,
            spawned_at=now,
            last_heartbeat=now,
            generation=self._generation,
        )
        self._children[pid] = child
        self._selector.register(reader, selectors.EVENT_READ, child)
        logger.info("spawned worker pid %d (age %d)", pid, age)
        return True

    def _become_worker(
        self,
        age: int,
        reader: int,
        writer: int,
        max_requests: int,
        mask: set[int | signal.Signals],
        slot: int | None,
    ) -> NoReturn:
        """In the forked child: drop what is the parent's only, then run the target."""
        settings = self._settings
        parent_pid = self._pid

        def make_worker() -> Worker:
            self._signals.forget_in_child()
            self._selector.close()
            for other in self._children.values():
                if other.channel is not None:
                    os.close(other.channel)
            os.close(reader)
            worker = Worker(
                age=age,
                parent_pid=parent_pid,
                channel=writer,
                worker_timeout=settings.worker_timeout,
                max_requests=max_requests,
                graceful_timeout=settings.graceful_timeout,
                balance=None if slot is None else AcceptBalance(self._board, slot),
            )
            install_signal_handlers(worker)
            set_parent_death_signal(self._prctl, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return worker

        run_worker(settings.target, list(settings.sockets), make_worker)

    def _reap(self) -> None:
        for child in list(self._children.values()):
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                code = None  # reaped by someone else: its status is lost
            else:
                if pid == 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
            self._read_channel(child, drain=True)  # a boot error may still be in the pipe
            self._close_channel(child)
            if child.slot is not None:
                self._board.free(child.slot)
            del self._children[child.pid]
            self._on_exit(child, code)

    def _on_exit(self, child: _Child, code: int | None) -> None:
        now = time.monotonic()
        lived = now - child.spawned_at
        asked = child.stop_deadline is not None or child.killed
        level = logging.INFO if asked or code in (0, EXIT_BOOT_ERROR) else logging.WARNING
        logger.log(
            level,
            "worker pid %d (age %d) %s after %.1f s",
            child.pid,
            child.age,
            _describe_exit(code),
            lived,
        )
        if code == EXIT_BOOT_ERROR and not asked:
            self._on_boot_error(child, now)
        elif not asked and lived < EARLY_EXIT_WINDOW:
            self._note_early_exit(now)

    def _on_boot_error(self, child: _Child, now: float) -> None:
        """The target cannot be loaded (a bad deploy, a bad option). With no other worker
        serving, stop everything (once) and exit with ``EXIT_BOOT_ERROR``: restarting would
        only repeat the error. With workers serving, keep them: call off a reload (the old
        generation stays), or retry the replacement with the back-off. A worker of a
        generation that a later reload replaces needs no replacement: it is only logged."""
        reason = child.boot_error or f"exit code {EXIT_BOOT_ERROR}, no message received"
        serving = [
            c
            for c in self._children.values()
            if c.ready and c.stop_deadline is None and not c.killed
        ]
        if child.generation < self._generation and any(c.old for c in serving):
            logger.error(
                "worker pid %d of a generation being replaced cannot boot: %s", child.pid, reason
            )
            return  # a newer generation takes its place; the serving ones wait for it
        if self._reload_deadline is not None and any(c.old for c in serving):
            self._call_off_reload(f"worker pid {child.pid} cannot boot: {reason}")
            return
        if serving and self._stopping is None:
            logger.error(
                "worker pid %d failed to boot: %s; %d workers keep serving",
                child.pid,
                reason,
                len(serving),
            )
            self._note_early_exit(now)
            return
        self._exit_code = EXIT_BOOT_ERROR
        if self._boot_failed:
            return
        self._boot_failed = True
        logger.error("worker pid %d failed to boot: %s; stopping the supervisor", child.pid, reason)
        self._begin_stop(graceful=True)

    def _call_off_reload(self, reason: str) -> None:
        """The new generation cannot serve (*reason*: a worker cannot boot, or none is ready
        by the deadline): stop it, and bring back the one it was replacing. If that one was
        itself replacing an older generation (two reloads in a row), that earlier reload goes
        on: the oldest is stopped once the generation brought back is ready."""
        logger.error("reload failed: %s; the old workers keep serving", reason)
        for other in self._children.values():
            if other.active:
                self._ask_to_stop(other, signal.SIGTERM, self._settings.graceful_timeout)
        kept = [
            c for c in self._children.values() if c.old and c.stop_deadline is None and not c.killed
        ]  # not empty: one of them is serving (see the callers)
        self._generation = max(c.generation for c in kept)
        for other in kept:
            if other.generation == self._generation:
                other.old = False
        self._stop_surplus()  # TTOU during the reload: the count it set holds
        if any(other.old for other in kept):
            self._reload_deadline = time.monotonic() + self._settings.worker_timeout
        else:
            self._reload_deadline = None

    def _note_early_exit(self, now: float) -> None:
        if now - self._last_early_exit > BACKOFF_RESET_AFTER:
            self._early_exits = 0
        self._early_exits += 1
        self._last_early_exit = now
        if self._early_exits < 2:
            return
        doublings = min(self._early_exits - 2, _MAX_DOUBLINGS)
        delay = min(BACKOFF_BASE * 2**doublings, BACKOFF_CAP)
        self._next_spawn_at = now + delay
        logger.warning(
            "workers keep exiting soon after boot (%d in a row); next spawn in %.2f s",
            self._early_exits,
            delay,
        )

    def _kill_remaining(self) -> None:
        """After a failure of the loop itself: kill and reap every worker, close pipes."""
        if self._children:
            logger.warning("supervisor failed; killing %d workers", len(self._children))
        for child in list(self._children.values()):
            _kill(child.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            self._close_channel(child)
        self._children.clear()

    # -- pipes -----------------------------------------------------------------------------

    def _poll(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._signals.drain_wakeup()
            else:
                self._read_channel(key.data, drain=False)

    def _read_channel(self, child: _Child, *, drain: bool) -> None:
        """Read what *child* sent (everything there is, with *drain*); close it at EOF."""
        while child.channel is not None:
            try:
                data = os.read(child.channel, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_channel(child)  # the worker is exiting: reaping follows
                return
            now = time.monotonic()
            child.last_heartbeat = now  # any message shows the worker alive
            for message in child.reader.feed(data):
                self._on_message(child, message, now)
            if not drain:
                return

    def _on_message(self, child: _Child, message: Message, now: float) -> None:
        if message.kind == READY:
            if not child.ready:
                child.ready = True
                logger.debug("worker pid %d is ready", child.pid)
        elif message.kind == STOPPING:
            child.said_stopping = True
            if child.stop_deadline is None:  # recycling itself: a replacement starts now
                child.stop_deadline = now + self._settings.graceful_timeout
        elif message.kind == BOOT_ERROR:
            child.boot_error = message.text

    def _close_channel(self, child: _Child) -> None:
        fd, child.channel = child.channel, None
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            os.close(fd)

    def _wait_time(self) -> float:
        """Seconds until the nearest deadline, at most ``LOOP_MAX_WAIT``."""
        now = time.monotonic()
        wake = now + LOOP_MAX_WAIT
        for child in self._children.values():
            if not child.killed:
                if child.stop_deadline is not None:
                    wake = min(wake, child.stop_deadline)
                else:
                    wake = min(wake, child.last_heartbeat + self._settings.worker_timeout)
        if self._reload_deadline is not None:
            wake = min(wake, self._reload_deadline)
        if self._on_stop_due is not None:
            wake = min(wake, self._on_stop_due)
        if self._stopping is None and self._next_spawn_at > now:
            wake = min(wake, self._next_spawn_at)
        return max(0.0, wake - now)


def _kill(pid: int, signum: int) -> None:
    """Signal one of our children; it may have exited already (not yet reaped: PID safe)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (status unknown: reaped elsewhere)"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"
