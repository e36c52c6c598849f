"""ThreadPerRequest: one thread per request, forgotten when done, drained on demand."""

from __future__ import annotations

import threading
import time

from netserve.strategies import ThreadPerRequest


def test_runs_each_request_in_its_own_thread() -> None:
    strategy = ThreadPerRequest()
    seen: list[int] = []
    lock = threading.Lock()

    def serve() -> None:
        with lock:
            seen.append(threading.get_ident())

    for _ in range(5):
        strategy.submit(None, serve)
    assert strategy.drain(deadline=time.monotonic() + 5)
    assert len(seen) == 5
    assert threading.get_ident() not in seen


def test_forgets_finished_threads() -> None:
    strategy = ThreadPerRequest()
    for _ in range(50):
        strategy.submit(None, lambda: None)
    assert strategy.drain(deadline=time.monotonic() + 5)
    assert strategy.live_threads == []


def test_drain_times_out_while_a_request_is_in_flight() -> None:
    strategy = ThreadPerRequest()
    release = threading.Event()
    strategy.submit(None, release.wait)
    assert strategy.drain(deadline=time.monotonic() + 0.05) is False
    assert len(strategy.live_threads) == 1
    release.set()
    assert strategy.drain(deadline=time.monotonic() + 5)


def test_daemon_flag_is_read_for_each_new_thread() -> None:
    daemon = False
    strategy = ThreadPerRequest(daemon=lambda: daemon)
    flags: list[bool] = []

    def serve() -> None:
        flags.append(threading.current_thread().daemon)

    strategy.submit(None, serve)
    assert strategy.drain(deadline=time.monotonic() + 5)
    daemon = True
    strategy.submit(None, serve)
    assert strategy.drain(deadline=time.monotonic() + 5)
    assert flags == [False, True]


def test_an_exception_reaches_threading_excepthook_and_the_thread_is_forgotten() -> None:
    strategy = ThreadPerRequest()
    caught: list[type[BaseException]] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: caught.append(args.exc_type)
    try:
        strategy.submit(None, lambda: 1 / 0)
        assert strategy.drain(deadline=time.monotonic() + 5)
    finally:
        threading.excepthook = previous
    assert caught == [ZeroDivisionError]
    assert strategy.live_threads == []


def test_draining_daemon_threads_holds_only_for_the_thread_that_drains() -> None:
    # a graceful drain in a background thread ("netserve drain") must neither make a plain
    # server_close() elsewhere wait for daemon threads, nor be cut short when another
    # drain's block ends first
    strategy = ThreadPerRequest(daemon=lambda: True)
    release = threading.Event()
    strategy.submit(None, lambda: release.wait(5))
    entered = threading.Event()
    results: list[bool] = []

    def graceful_drain() -> None:
        with strategy.draining_daemon_threads():
            entered.set()
            results.append(strategy.drain(deadline=time.monotonic() + 0.3))

    drainer = threading.Thread(target=graceful_drain)
    drainer.start()
    try:
        assert entered.wait(5)
        assert strategy.drain(deadline=time.monotonic())  # daemon threads: not waited for
        with strategy.draining_daemon_threads():
            pass  # another block ends while the drainer's still runs
        drainer.join(5)
        assert results == [False]  # it waited for the daemon thread to its deadline
    finally:
        release.set()
        drainer.join(5)
