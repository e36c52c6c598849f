"""The blocking-handler thread pool and the default executor of the loops serve() makes."""

from __future__ import annotations

import threading
import time

import pytest

from netserve import ConfigError
from netserve.aio._threads import BlockingPool, DaemonExecutor

WAIT = 10.0


def test_jobs_run_on_the_pool_threads_and_the_threads_end_after_close() -> None:
    pool = BlockingPool(3, name="test-pool")
    done = threading.Barrier(4, timeout=10)
    names: list[str] = []

    def job(n: int) -> None:
        names.append(threading.current_thread().name)
        done.wait()  # three jobs run at once: one per thread

    for n in range(3):
        pool.submit(job, n)
    done.wait()
    pool.close()
    assert pool.join(10)
    assert sorted(names) == ["test-pool-0", "test-pool-1", "test-pool-2"]
    with pytest.raises(RuntimeError):
        pool.submit(job, 0)


def test_an_escaping_error_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = BlockingPool(1)
    ran = threading.Event()

    def bad(_: object) -> None:
        raise ValueError("boom")

    pool.submit(bad, None)
    pool.submit(lambda _: ran.set(), None)
    assert ran.wait(10)
    pool.close()
    assert pool.join(10)
    assert "escaped its error handling" in caplog.text
    assert "ValueError: boom" in caplog.text


def test_at_least_one_thread() -> None:
    with pytest.raises(ConfigError, match="threads"):
        BlockingPool(0)


def test_the_executor_starts_daemon_threads_as_needed_up_to_its_bound() -> None:
    executor = DaemonExecutor(join_timeout=WAIT, max_workers=2)
    release = threading.Event()
    futures = [executor.submit(release.wait, WAIT) for _ in range(4)]  # two wait for a thread
    try:
        assert executor.threads == 2
        assert all(
            thread.daemon
            for thread in threading.enumerate()
            if thread.name.startswith("netserve-aio-executor")
        )
    finally:
        release.set()
    assert [future.result(WAIT) for future in futures] == [True] * 4
    assert executor.submit(pow, 2, 10).result(WAIT) == 1024
    assert executor.threads == 2  # idle threads are reused
    executor.shutdown()


def test_the_executor_sets_a_call_error_on_its_future_and_refuses_calls_after_shutdown() -> None:
    executor = DaemonExecutor(join_timeout=WAIT)
    with pytest.raises(ZeroDivisionError):
        executor.submit(divmod, 1, 0).result(WAIT)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(pow, 2, 10)


def test_the_executor_waits_for_a_stuck_call_only_its_join_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = DaemonExecutor(join_timeout=0.1)
    entered = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(WAIT)

    future = executor.submit(stuck)
    assert entered.wait(WAIT)
    start = time.monotonic()
    executor.shutdown(wait=True)
    try:
        assert time.monotonic() - start < WAIT / 2
        assert not future.done()  # left running in its daemon thread
        assert "default executor (asyncio.to_thread, run_in_executor) 0.1 s after" in caplog.text
    finally:
        release.set()
    future.result(WAIT)


def test_the_executor_cancels_queued_calls_if_asked() -> None:
    executor = DaemonExecutor(join_timeout=WAIT, max_workers=1)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> bool:
        entered.set()
        return release.wait(WAIT)

    running = executor.submit(hold)
    queued = executor.submit(pow, 2, 10)
    assert entered.wait(WAIT)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(WAIT) is True
    assert queued.cancelled()
