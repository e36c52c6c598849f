"""Supervisor end to end: a real supervisor process, real workers, loopback sockets.

Each test starts the supervisor script of ``conftest`` in a subprocess, waits for readiness
(the port line, then the workers' ``serving`` log lines), and polls with deadlines for
changes in the set of workers, read from ``/proc/PID/task/PID/children``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from netserve.supervisor import EXIT_BOOT_ERROR
from netserve.supervisor._arbiter import Settings

from .conftest import IO_TIMEOUT, Supervised, process_alive, read_line, wait_for

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc"),
    pytest.mark.timeout(60),
]

Start = Callable[..., Supervised]

#: The spec's bound for replacing a killed worker.
REPLACE_WITHIN = 2.0
#: How long a fast stop may take end to end: the 1 s fast-stop wait plus process exits.
FAST_STOP_BOUND = 5.0
#: How long a test keeps the supervisor and its workers stopped (SIGSTOP): well past their
#: 1 s worker_timeout plus the supervisor's longest wait. The stimulus, not a readiness wait.
STOPPED_FOR = 3.0


def test_killed_worker_is_replaced_while_the_other_serves(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=2)
    before = supervised.wait_serving(2)
    victim, survivor = sorted(before)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    replaced_after = None
    answered_by: set[int] = set()
    while replaced_after is None or time.monotonic() - killed_at < REPLACE_WITHIN:
        pid, reply = supervised.request("abc")  # never refused, never from the dead worker
        assert reply == "cba"
        answered_by.add(pid)
        live = supervised.live_workers()
        if replaced_after is None and len(live) == 2 and victim not in live:
            replaced_after = time.monotonic() - killed_at
        assert time.monotonic() - killed_at < REPLACE_WITHIN or replaced_after is not None, (
            f"not replaced within {REPLACE_WITHIN} s"
        )
    assert victim not in answered_by
    after = supervised.wait_serving(2)
    assert survivor in after
    assert victim not in after
    assert re.search(rf"worker pid {victim} .*was killed by SIGKILL", supervised.log())


def test_sigterm_finishes_requests_in_flight(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=2, graceful_timeout=30.0)
    workers = supervised.wait_serving(2)
    clients = [supervised.connect() for _ in range(6)]
    try:
        for index, (sock, _) in enumerate(clients):
            sock.sendall(f"first-{index}-".encode())  # half a line: the handler waits
        supervised.send(signal.SIGTERM)
        # every worker has been asked to stop before the clients finish their lines
        supervised.wait_log(r"stopping graceful=True", count=len(workers))
        for index, (sock, pid) in enumerate(clients):
            sock.sendall(f"second-{index}\n".encode())
            assert read_line(sock) == f"{pid} {f'first-{index}-second-{index}'[::-1]}"
    finally:
        for sock, _ in clients:
            sock.close()
    assert supervised.wait_exit(IO_TIMEOUT) == 0
    assert "graceful stop" in supervised.log()


def test_hup_under_load_refuses_nothing_and_replaces_every_worker(
    start_supervisor: Start,
) -> None:
    supervised = start_supervisor(workers=2)
    old = supervised.wait_serving(2)
    stop = threading.Event()
    answered_by: list[int] = []
    failures: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                pid, reply = supervised.request("load")
                assert reply == "daol"
                answered_by.append(pid)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    client = threading.Thread(target=load, name="hup load", daemon=True)
    client.start()
    try:
        wait_for(lambda: len(answered_by) >= 10, "requests before the reload")
        supervised.send(signal.SIGHUP)

        def all_new() -> set[int] | None:
            live = supervised.serving_workers()
            return live if len(live) == 2 and not live & old else None

        new = wait_for(all_new, "a new generation of workers, the old one gone")
        served_before = len(answered_by)
        wait_for(lambda: len(answered_by) >= served_before + 10, "requests after the reload")
    finally:
        stop.set()
        client.join(IO_TIMEOUT)
    assert not client.is_alive()
    assert failures == []
    assert set(answered_by[-5:]) <= new
    assert supervised.live_workers() == new
    assert "reload: 2 new workers ready; stopping 2 old workers" in supervised.log()


def test_a_failed_reload_during_a_reload_keeps_the_worker_count(start_supervisor: Start) -> None:
    """HUP, then HUP again to code that cannot load before the first new generation is
    ready: the second reload is called off, the first goes on, and two workers remain."""
    supervised = start_supervisor(workers=2)
    first = supervised.wait_serving(2)
    hold, broken = supervised.directory / "hold", supervised.directory / "broken"
    hold.write_text("")  # the first new generation boots, and waits
    supervised.send(signal.SIGHUP)
    second = wait_for(
        lambda: supervised.live_workers() - first if len(supervised.live_workers()) == 4 else None,
        "a second generation booting",
    )
    broken.write_text("")
    supervised.send(signal.SIGHUP)
    supervised.wait_log(r"reload failed: worker pid \d+ cannot boot")
    broken.unlink()
    hold.unlink()
    assert supervised.wait_serving(2) == second
    assert supervised.request("done")[1] == "enod"
    assert supervised.proc.poll() is None


def test_a_failed_reload_after_ttou_keeps_the_count_ttou_set(start_supervisor: Start) -> None:
    """TTOU during a reload, then the reload is called off: the old generation comes back
    with the count TTOU set, not with the count it had."""
    supervised = start_supervisor(workers=2)
    first = supervised.wait_serving(2)
    hold, broken = supervised.directory / "hold", supervised.directory / "broken"
    hold.write_text("")
    supervised.send(signal.SIGHUP)
    wait_for(lambda: len(supervised.live_workers()) == 4, "a second generation booting")
    supervised.send(signal.SIGTTOU)
    supervised.wait_log(r"scaling down to 1 workers")
    broken.write_text("")  # the new generation fails once it goes on
    hold.unlink()
    supervised.wait_log(r"reload failed: worker pid \d+ cannot boot")
    (kept,) = supervised.wait_serving(1)
    assert kept in first
    assert supervised.request("done") == (kept, "enod")


def test_a_reload_whose_new_workers_crash_is_called_off(start_supervisor: Start) -> None:
    """HUP to code that crashes at start (not an import error): once worker_timeout passes
    with no new worker ready, the old workers keep serving instead of being stopped."""
    supervised = start_supervisor(workers=2, worker_timeout=2.0)
    old = supervised.wait_serving(2)
    (supervised.directory / "crash").write_text("")
    supervised.send(signal.SIGHUP)
    supervised.wait_log(r"reload failed: no new worker ready after 2\.0 s")
    assert "stopping the old anyway" not in supervised.log()
    assert supervised.wait_serving(2) == old
    assert supervised.request("still")[0] in old


def test_a_stopped_supervisor_does_not_kill_its_workers_when_continued(
    start_supervisor: Start,
) -> None:
    """SIGSTOP the supervisor and its workers (as Ctrl-Z or a frozen container does) for
    longer than worker_timeout, then continue them, the supervisor first: the stall is not
    taken for missing heartbeats."""
    supervised = start_supervisor(workers=2, worker_timeout=1.0)
    workers = supervised.wait_serving(2)
    stopped = [supervised.pid, *sorted(workers)]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STOPPED_FOR)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    log = supervised.wait_log(r"did not run for|no heartbeat")
    assert "no heartbeat" not in log, log
    assert {supervised.request(f"r{n}")[0] for n in range(4)} <= workers
    assert supervised.live_workers() == workers
    assert "no heartbeat" not in supervised.log()


def test_ttin_and_ttou_change_the_worker_count(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=2)
    supervised.wait_serving(2)

    def scale(signum: int, expected: int, logged: str, times_logged: int) -> None:
        supervised.send(signum)
        # wait for the log line too, so two signals in a row are never merged into one
        supervised.wait_log(logged, count=times_logged)
        wait_for(lambda: len(supervised.live_workers()) == expected, f"{expected} workers")

    scale(signal.SIGTTIN, 3, r"scaling up to 3 workers", 1)
    supervised.wait_serving(3)
    scale(signal.SIGTTOU, 2, r"scaling down to 2 workers", 1)
    scale(signal.SIGTTOU, 1, r"scaling down to 1 workers", 1)
    scale(signal.SIGTTOU, 1, r"not scaling down: already at 1 worker", 1)
    (last,) = supervised.wait_serving(1)
    assert supervised.request("one") == (last, "eno")


def test_import_error_stops_with_one_error_line_and_exit_code_3(start_supervisor: Start) -> None:
    started = time.monotonic()
    supervised = start_supervisor(workers=2, import_error=True)
    assert supervised.wait_exit(IO_TIMEOUT) == EXIT_BOOT_ERROR
    assert time.monotonic() - started < IO_TIMEOUT
    log = supervised.log()
    mentions = [line for line in log.splitlines() if "netserve_test_missing_module" in line]
    assert len(mentions) == 1, log
    assert mentions[0].startswith("ERROR netserve ")
    assert "failed to boot: ModuleNotFoundError: No module named" in mentions[0]
    assert log.count("spawned worker") == 2, log  # no restart loop
    assert "Traceback" not in log


def test_crashing_workers_are_respawned_with_back_off(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=1, crash=True)
    # early exits in a row: respawn at once, then after 0.25 s, 0.5 s, 1 s, ...
    log = supervised.wait_log(r"next spawn in 1\.00 s")
    assert "next spawn in 0.25 s" in log
    assert "next spawn in 0.50 s" in log
    assert "ValueError: target crashed on purpose" in log  # the traceback, from the worker
    assert log.count("spawned worker") <= 5, log
    supervised.send(signal.SIGTERM)
    assert supervised.wait_exit(IO_TIMEOUT) == 0


def test_worker_without_heartbeat_is_killed_and_replaced(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=2, worker_timeout=1.0)
    supervised.wait_serving(2)
    frozen, reply = supervised.request("freeze")  # that worker stops calling notify()
    assert reply == "ezeerf"
    supervised.wait_log(rf"worker pid {frozen} \(age \d+\): no heartbeat for")

    def replaced() -> set[int] | None:
        live = supervised.serving_workers()
        return live if len(live) == 2 and frozen not in live else None

    wait_for(replaced, "the frozen worker replaced")
    assert re.search(rf"worker pid {frozen} .*was killed by SIGKILL", supervised.log())


def test_max_requests_recycles_without_refusing(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=1, max_requests=5)
    supervised.wait_serving(1)
    answered_by = [supervised.request(f"r{index}")[0] for index in range(20)]
    # about 5 requests per worker: a request may reach a worker that just asked to stop
    assert len(set(answered_by)) >= 3, answered_by
    assert "requests served (max_requests); stopping gracefully" in supervised.log()
    assert "no heartbeat" not in supervised.log()


def test_workers_exit_when_the_supervisor_is_killed(start_supervisor: Start) -> None:
    supervised = start_supervisor(workers=2)
    workers = supervised.wait_serving(2)
    supervised.send(signal.SIGKILL)
    supervised.wait_exit(IO_TIMEOUT)
    wait_for(
        lambda: not any(process_alive(pid) for pid in workers),
        "orphaned workers to exit",
        timeout=10.0,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_fast(start_supervisor: Start, signum: signal.Signals) -> None:
    supervised = start_supervisor(workers=2, graceful_timeout=30.0)
    supervised.wait_serving(2)
    sock, _ = supervised.connect()  # a request in flight that never ends
    with sock:
        started = time.monotonic()
        supervised.send(signum)
        assert supervised.wait_exit(FAST_STOP_BOUND) == 0
        assert time.monotonic() - started < FAST_STOP_BOUND
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""  # the worker is gone: its connection closed
    assert "fast stop" in supervised.log()


def test_no_connection_refused_while_workers_restart(start_supervisor: Start) -> None:
    """The listening socket belongs to the parent: with no worker at all, connections wait."""
    supervised = start_supervisor(workers=1)
    (only,) = supervised.wait_serving(1)
    os.kill(only, signal.SIGKILL)
    with socket.create_connection(("127.0.0.1", supervised.port), timeout=IO_TIMEOUT) as sock:
        greeting = read_line(sock)  # the connection waited in the backlog for the replacement
    assert greeting.startswith("hi "), greeting
    replacement = int(greeting.split()[1])
    assert replacement != only
    assert replacement in supervised.serving_workers()


def _settings(workers: int, on_stop: Callable[[bool], object]) -> Settings:
    """Settings for an ``Arbiter`` driven by hand: nothing to fork, long timeouts."""
    return Settings(
        target=lambda sockets, worker: None,
        sockets=(),
        workers=workers,
        worker_timeout=30.0,
        max_requests=0,
        max_requests_jitter=0,
        graceful_timeout=30.0,
        on_stop=on_stop,
    )


def test_on_stop_runs_once_every_worker_accepts_no_more_or_after_a_while() -> None:
    from netserve.supervisor._arbiter import ON_STOP_WAIT, Arbiter, _Child

    calls: list[bool] = []
    arbiter = Arbiter(_settings(workers=2, on_stop=calls.append))
    now = time.monotonic()
    one, two = (_Child(pid, pid, None, None, now, now) for pid in (1, 2))
    arbiter._children = {1: one, 2: two}
    arbiter._stopping = "graceful"
    arbiter._on_stop_due = now + ON_STOP_WAIT
    arbiter._run_on_stop(now)
    assert calls == []  # the workers may still be accepting
    one.said_stopping = True
    arbiter._run_on_stop(now)
    assert calls == []
    two.said_stopping = True
    arbiter._run_on_stop(now)
    assert calls == [True]
    arbiter._run_on_stop(now)
    assert calls == [True]  # once
    # a worker that never says so does not hold the stop for longer than ON_STOP_WAIT
    two.said_stopping = False
    arbiter._on_stop_due = now + ON_STOP_WAIT
    arbiter._run_on_stop(now + ON_STOP_WAIT)
    assert calls == [True, True]
    arbiter._selector.close()


def test_a_stall_is_seen_after_a_wait_that_ended_early_and_a_slow_on_stop_is_not_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fake clock, with one (pretend, never signalled) worker: a wait woken early by a
    message, then the supervisor stopped for 1.5 s while it reaped, is a stall; an
    ``on_stop`` callback that takes 3 s is the loop at work, not a stall."""
    from netserve.supervisor import _arbiter
    from netserve.supervisor._arbiter import STALL_THRESHOLD, Arbiter, _Child

    clock = [1000.0]
    monkeypatch.setattr(_arbiter, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    stalls: list[float] = []

    def slow_on_stop(graceful: bool) -> None:
        clock[0] += 3.0

    class Scripted(Arbiter):
        turn = 0

        def _handle_signals(self) -> None:
            self.turn += 1
            if self.turn == 3:
                self._stopping = "graceful"
                self._on_stop_due = clock[0]

        def _reap(self) -> None:
            if self.turn == 2:
                clock[0] += 1.5  # SIGSTOP landed here
            if self.turn == 4:
                self._children.clear()

        def _poll(self, timeout: float) -> None:
            assert timeout == 1.0  # LOOP_MAX_WAIT: no deadline is nearer
            clock[0] += 0.01  # a heartbeat woke it

        def _discount_stall(self, late: float) -> None:
            stalls.append(late)
            super()._discount_stall(late)

        def _kill_remaining(self) -> None:
            self._children.clear()

    arbiter = Scripted(_settings(workers=0, on_stop=slow_on_stop))
    now = clock[0]
    arbiter._children = {1: _Child(1, 1, None, None, now, now, killed=True)}
    assert arbiter.run() == 0
    assert arbiter.turn == 4
    assert [late > STALL_THRESHOLD for late in stalls] == [False, True, False], stalls
